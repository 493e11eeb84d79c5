"""charstream's kernel (_rnn_step.pyx) built for x86-64-v3 (AVX2, FMA); charstream._kernel loads it where the CPU has them but not AVX-512."""
include "_rnn_step.pyx"
