"""charstream's kernel (_rnn_step.pyx) built for x86-64-v4 (AVX-512), 512-bit vectors preferred; charstream._kernel loads it where the CPU has AVX-512."""
include "_rnn_step.pyx"
