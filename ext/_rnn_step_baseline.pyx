"""charstream's kernel (_rnn_step.pyx) built for any CPU of the architecture (x86-64: SSE2 only); charstream._kernel's fallback."""
include "_rnn_step.pyx"
