/* What the running CPU, and its OS, can execute: the levels charstream's kernel paths are built for.
 *
 * cs_cpu_avx512() is x86-64-v4 (AVX512F, BW, CD, DQ, VL over v3), cs_cpu_avx2() is x86-64-v3 (AVX, AVX2,
 * FMA, BMI1, BMI2, F16C, LZCNT, MOVBE over v2: SSE4.2, SSSE3, POPCNT, CMPXCHG16B). __builtin_cpu_supports
 * (libgcc, compiler-rt) reports AVX and AVX-512 only where the OS saves their registers (XGETBV).
 * gcc 12 knows the levels by name; elsewhere the features that tell them apart are asked one by one
 * (every CPU with AVX2, FMA and BMI2 has F16C, LZCNT and MOVBE). Other architectures: 0, baseline only.
 */
#ifndef CHARSTREAM_CPU_H
#define CHARSTREAM_CPU_H

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
static int cs_cpu_avx2(void)
{
    __builtin_cpu_init();
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
    return __builtin_cpu_supports("x86-64-v3") != 0;
#else
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi")
        && __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("popcnt");
#endif
}

static int cs_cpu_avx512(void)
{
    __builtin_cpu_init();
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
    return __builtin_cpu_supports("x86-64-v4") != 0;
#else
    return cs_cpu_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512vl");
#endif
}
#else
static int cs_cpu_avx2(void) { return 0; }
static int cs_cpu_avx512(void) { return 0; }
#endif

#endif
