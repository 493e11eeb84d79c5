"""Which of charstream's kernel paths this CPU can run, asked of the CPU itself (ext/cpu.h); built for any CPU."""

cdef extern from "cpu.h":
    int cs_cpu_avx2()
    int cs_cpu_avx512()


def supported():
    """The kernel paths this CPU and OS can execute, fastest first: ["avx512", "avx2", "baseline"] or a tail of it."""
    paths = ["baseline"]
    if cs_cpu_avx2():
        paths.insert(0, "avx2")
        if cs_cpu_avx512():
            paths.insert(0, "avx512")
    return paths
