/* The parts of charstream's kernel written in C; ext/_rnn_step.pyx has the rest.
 *
 * cs_gemm_acc(C, ldc, A, ars, acs, B, ldb, M, K, N, add) is equivalent to
 * `C[:M, :N] += A[:M, :K] @ B[:K, :N]` (`=` when add is 0, so that C needs no zeroing), where A[i, k]
 * is A[i * ars + k * acs] (so A may be a transpose) and the rows of B and C start every ldb and ldc
 * doubles. It is C because gcc does not keep a Cython register block in registers (measured: the
 * accumulators of the Cython version spill to the stack at every k); GCC/clang vector extensions keep
 * a block of C in registers: 4 rows x 4 vectors of 8 doubles with AVX-512, 6 rows x 2 vectors of 4
 * with AVX2 (CS_GEMM_MR, CS_GEMM_NV). Which code path
 * computes C[i, j] depends on i, j, M and N only, and each path sums over k in a fixed order: results
 * never depend on alignment.
 *
 * Also here: the panels (cs_pack, cs_pack_transposed, cs_panel_matvec) that both recurrences and
 * sampling stream their matrix-vector products through, Adagrad (cs_adagrad), exp and tanh eight at
 * a time (cs_exp_affine, cs_exp_sub, cs_tanh) and the inverse-CDF draw (cs_draw). Paths for
 * AVX-512 use its intrinsics, vector extensions need AVX, and every function has a plain C path for
 * the rest: setup.py builds this once per path (avx512, avx2, baseline; docs/build.md).
 */
#ifndef CHARSTREAM_KERNELS_H
#define CHARSTREAM_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#if (defined(__GNUC__) || defined(__clang__)) && defined(__AVX__)
/* 4 doubles: one ymm register (AVX). Without AVX, plain loops below that gcc vectorises with SSE2:
 * 256-bit vector types there would spill 16 xmm registers (measured 3x slower). */
typedef double cs_v4 __attribute__((vector_size(32)));
static inline cs_v4 cs_load(const double *p) { cs_v4 v; memcpy(&v, p, sizeof v); return v; }
static inline void cs_put(double *p, cs_v4 v, int add) { if (add) v += cs_load(p); memcpy(p, &v, sizeof v); }
#define CS_VECTOR 1
#define CS_PANELS 1   /* the recurrences, sampling and scoring through panels pay off only with vector registers */
#ifdef __AVX512F__
#define CS_W 8
#define CS_GEMM_MR 4   /* cs_gemm_acc's main block: rows of C ... */
#define CS_GEMM_NV 4   /* ... by vectors: 16 accumulators, 4 loads and 4 broadcasts in 32 zmm registers */
#else
#define CS_W 4
#define CS_GEMM_MR 6   /* 12 accumulators, 2 loads and a broadcast in 16 ymm registers (4 x 4 spilled) */
#define CS_GEMM_NV 2
#endif
/* CS_W doubles, the main block's vectors: a zmm register where there is AVX-512. */
typedef double cs_vw __attribute__((vector_size(8 * CS_W)));
static inline cs_vw cs_loadw(const double *p) { cs_vw v; memcpy(&v, p, sizeof v); return v; }
static inline void cs_putw(double *p, cs_vw v, int add) { if (add) v += cs_loadw(p); memcpy(p, &v, sizeof v); }
#endif
#ifndef CS_PANELS
#define CS_PANELS 0
#endif

/* cs_gemm_acc (double) and cs_gemm_acc_f (float): one source, ext/gemm.h, instantiated per type. */
#define CS_REAL double
#define CS_NAME(x) x
#include "gemm.h"
#undef CS_REAL
#undef CS_NAME
#define CS_REAL float
#define CS_NAME(x) x##_f
#include "gemm.h"
#undef CS_REAL
#undef CS_NAME

/* Equivalent to `y[:8 * nb] = A @ x[:n]` for A packed in panels of 8 rows, P[(b * n + j) * 8 + r] =
 * A[8 * b + r, j] (cs_pack): one sequential stream of weights, four partial sums per row (j mod 4)
 * added at the end, no horizontal reductions. `rev` takes the panels from the last, so that
 * alternating calls find the panels they used last still in L1. */
static inline void cs_panel_matvec(const double *P, ptrdiff_t nb, ptrdiff_t n, const double *x,
                                   double *y, int rev)
{
#ifndef CS_VECTOR
    for (ptrdiff_t q = 0; q < nb; q++) {
        ptrdiff_t b = rev ? nb - 1 - q : q;
        const double *p = P + b * n * 8;
        double acc[8] = {0};
        for (ptrdiff_t j = 0; j < n; j++, p += 8)
            for (int r = 0; r < 8; r++)
                acc[r] += p[r] * x[j];
        memcpy(y + 8 * b, acc, sizeof acc);
    }
#elif CS_W == 8
    /* a panel's 8 rows are one vector: four accumulators (j mod 4) hide the FMA latency */
    for (ptrdiff_t q = 0; q < nb; q++) {
        ptrdiff_t b = rev ? nb - 1 - q : q;
        const double *p = P + b * n * 8;
        cs_vw a0 = {0}, b0 = {0}, c0 = {0}, d0 = {0};
        ptrdiff_t j = 0;
        for (; j + 4 <= n; j += 4, p += 32) {
            a0 += x[j] * cs_loadw(p);
            b0 += x[j + 1] * cs_loadw(p + 8);
            c0 += x[j + 2] * cs_loadw(p + 16);
            d0 += x[j + 3] * cs_loadw(p + 24);
        }
        for (; j < n; j++, p += 8)
            a0 += x[j] * cs_loadw(p);
        a0 = (a0 + b0) + (c0 + d0);
        memcpy(y + 8 * b, &a0, sizeof a0);
    }
#else
    for (ptrdiff_t q = 0; q < nb; q++) {
        ptrdiff_t b = rev ? nb - 1 - q : q;
        const double *p = P + b * n * 8;
        cs_v4 a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0}, c0 = {0}, c1 = {0}, d0 = {0}, d1 = {0};
        ptrdiff_t j = 0;
        for (; j + 4 <= n; j += 4, p += 32) {
            a0 += x[j] * cs_load(p);          a1 += x[j] * cs_load(p + 4);
            b0 += x[j + 1] * cs_load(p + 8);  b1 += x[j + 1] * cs_load(p + 12);
            c0 += x[j + 2] * cs_load(p + 16); c1 += x[j + 2] * cs_load(p + 20);
            d0 += x[j + 3] * cs_load(p + 24); d1 += x[j + 3] * cs_load(p + 28);
        }
        for (; j < n; j++, p += 8) {
            a0 += x[j] * cs_load(p);
            a1 += x[j] * cs_load(p + 4);
        }
        a0 = (a0 + b0) + (c0 + d0);
        a1 = (a1 + b1) + (c1 + d1);
        memcpy(y + 8 * b, &a0, sizeof a0);
        memcpy(y + 8 * b + 4, &a1, sizeof a1);
    }
#endif
}

#ifdef __AVX512F__
/* r[q][c] <- r[c][q]: an 8x8 block of doubles transposed in registers (three rounds of shuffles). */
static inline void cs_transpose8(__m512d r[8])
{
    __m512d t[8], u[8];
    for (int q = 0; q < 8; q += 2) {
        t[q] = _mm512_unpacklo_pd(r[q], r[q + 1]);       /* r[q][0] r[q+1][0] r[q][2] r[q+1][2] ... */
        t[q + 1] = _mm512_unpackhi_pd(r[q], r[q + 1]);   /* r[q][1] r[q+1][1] r[q][3] ... */
    }
    for (int q = 0; q < 8; q += 4) {                     /* 128-bit lanes 0, 2 / 1, 3 of two rows pairs */
        u[q] = _mm512_shuffle_f64x2(t[q], t[q + 2], 0x88);
        u[q + 1] = _mm512_shuffle_f64x2(t[q], t[q + 2], 0xDD);
        u[q + 2] = _mm512_shuffle_f64x2(t[q + 1], t[q + 3], 0x88);
        u[q + 3] = _mm512_shuffle_f64x2(t[q + 1], t[q + 3], 0xDD);
    }
    /* u[0] holds columns 0 and 4 of rows 0-3, u[1] columns 2, 6, u[2] 1, 5, u[3] 3, 7; u[4..7] rows 4-7 */
    r[0] = _mm512_shuffle_f64x2(u[0], u[4], 0x88); r[4] = _mm512_shuffle_f64x2(u[0], u[4], 0xDD);
    r[2] = _mm512_shuffle_f64x2(u[1], u[5], 0x88); r[6] = _mm512_shuffle_f64x2(u[1], u[5], 0xDD);
    r[1] = _mm512_shuffle_f64x2(u[2], u[6], 0x88); r[5] = _mm512_shuffle_f64x2(u[2], u[6], 0xDD);
    r[3] = _mm512_shuffle_f64x2(u[3], u[7], 0x88); r[7] = _mm512_shuffle_f64x2(u[3], u[7], 0xDD);
}
#endif

/* Pack the m rows of A (m, n) into panels of 8 for cs_panel_matvec, starting at row r0 of the panels;
 * rows past the end of the last panel must be zeroed by the caller. With AVX-512 and r0 a multiple
 * of 8, whole 8x8 blocks go through cs_transpose8 (a scalar scatter took 11,000 cycles for H=100). */
static inline void cs_pack(const double *A, ptrdiff_t m, ptrdiff_t n, double *P, ptrdiff_t r0)
{
    ptrdiff_t i = 0;
#ifdef __AVX512F__
    if (r0 % 8 == 0) {
        for (; i + 8 <= m; i += 8) {
            double *dst = P + ((r0 + i) / 8) * n * 8;
            ptrdiff_t j = 0;
            for (; j + 8 <= n; j += 8) {
                __m512d r[8];
                for (int q = 0; q < 8; q++)
                    r[q] = _mm512_loadu_pd(A + (i + q) * n + j);
                cs_transpose8(r);
                for (int q = 0; q < 8; q++)
                    _mm512_storeu_pd(dst + (j + q) * 8, r[q]);
            }
            for (; j < n; j++)
                for (int q = 0; q < 8; q++)
                    dst[8 * j + q] = A[(i + q) * n + j];
        }
    }
#endif
    for (; i < m; i++) {
        ptrdiff_t r = r0 + i;
        double *dst = P + (r / 8) * n * 8 + r % 8;
        for (ptrdiff_t j = 0; j < n; j++)
            dst[8 * j] = A[i * n + j];
    }
}

/* Pack A^T for cs_panel_matvec, A (n, n): panel b, row r, column j is A[j, 8b + r], so each panel
 * row is 8 consecutive entries of a row of A (fewer at the right edge; the rest stays zero). */
static inline void cs_pack_transposed(const double *A, ptrdiff_t n, double *P)
{
    ptrdiff_t n8 = n - n % 8;
    for (ptrdiff_t j = 0; j < n; j++) {
        const double *a = A + j * n;
        for (ptrdiff_t k = 0; k < n8; k += 8)
            for (int r = 0; r < 8; r++)
                P[k * n + 8 * j + r] = a[k + r];
        for (ptrdiff_t k = n8; k < n; k++)
            P[n8 * n + 8 * j + (k - n8)] = a[k];
    }
}

/* Equivalent to `B[:n, :m] = A[:m, :n].T` (B's rows m apart), eight rows of A at a time: each write
 * fills a cache line of B while the eight rows being read stay in L1 (row by row, the writes were n
 * lines one row of B apart, which for m a power of two all fall into one L1 set: 0.25 ms at m=1024). */
static inline void cs_transpose(const double *A, ptrdiff_t m, ptrdiff_t n, double *B)
{
    for (ptrdiff_t g0 = 0; g0 < m; g0 += 8) {
        ptrdiff_t g1 = g0 + 8 < m ? g0 + 8 : m;
        for (ptrdiff_t k = 0; k < n; k++)
            for (ptrdiff_t g = g0; g < g1; g++)
                B[k * m + g] = A[g * n + k];
    }
}

/* exp and tanh, eight at a time with AVX-512 (libmvec's calls cost about 18 TSC ticks per eight and
 * spill the caller's registers; these are inline, about 20 instructions). x = n ln2 + r with
 * |r| <= ln2/2 (Cody-Waite: n ln2_hi is exact), expm1(r) = r + r^2 (1/2! + r/3! + ... + r^11/13!)
 * (the first term left out is below 2e-17 relative), then with t = 2^n
 *   exp(x) = t expm1(r) + t,   expm1(x) = t expm1(r) + (t - 1),
 * each one fused multiply-add: within about an ulp of libm. Elsewhere, the same loops call libm. */
#ifdef __AVX512F__
static inline __m512d cs_expm1_parts(__m512d x, __m512d *t)
{
    const __m512d log2e = _mm512_set1_pd(1.4426950408889634074);
    const __m512d ln2_hi = _mm512_set1_pd(6.93147180369123816490e-01);
    const __m512d ln2_lo = _mm512_set1_pd(1.90821492927058770002e-10);
    __m512d n = _mm512_roundscale_pd(_mm512_mul_pd(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_fnmadd_pd(n, ln2_hi, x);
    r = _mm512_fnmadd_pd(n, ln2_lo, r);
    __m512d q = _mm512_set1_pd(1.0 / 6227020800.0);                      /* 1/13! */
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 479001600.0));       /* 1/12! */
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 39916800.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 3628800.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 362880.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 40320.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 5040.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 720.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 120.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 24.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 6.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(0.5));
    *t = _mm512_scalef_pd(_mm512_set1_pd(1.0), n);                      /* 2^n, 0 below 2^-1074 */
    return _mm512_fmadd_pd(_mm512_mul_pd(r, r), q, r);
}

/* exp(max(x, -800)): exp(-800) is 0.0 in double, as libm's is below -745.2 */
static inline __m512d cs_exp8(__m512d x)
{
    __m512d t, em = cs_expm1_parts(_mm512_max_pd(x, _mm512_set1_pd(-800.0)), &t);
    return _mm512_fmadd_pd(t, em, t);
}

/* tanh(a) = expm1(2a) / (expm1(2a) + 2) for a clamped to [-20, 20] (tanh(20) is 1.0) */
static inline __m512d cs_tanh8(__m512d a)
{
    __m512d x = _mm512_add_pd(a, a), t, em, e;
    x = _mm512_min_pd(_mm512_max_pd(x, _mm512_set1_pd(-40.0)), _mm512_set1_pd(40.0));
    em = cs_expm1_parts(x, &t);
    e = _mm512_fmadd_pd(t, em, _mm512_sub_pd(t, _mm512_set1_pd(1.0)));
    return _mm512_div_pd(e, _mm512_add_pd(e, _mm512_set1_pd(2.0)));
}

static inline __mmask8 cs_tail(ptrdiff_t left) { return (__mmask8)((1u << (left < 8 ? left : 8)) - 1); }
#endif

/* Equivalent to `h[:n] = np.tanh(h[:n])`, to a few ulp. */
static inline void cs_tanh(double *h, ptrdiff_t n)
{
#ifdef __AVX512F__
    for (ptrdiff_t i = 0; i < n; i += 8) {
        __mmask8 k = cs_tail(n - i);
        _mm512_mask_storeu_pd(h + i, k, cs_tanh8(_mm512_maskz_loadu_pd(k, h + i)));
    }
#else
    for (ptrdiff_t i = 0; i < n; i++) {
        double a = h[i] > 20.0 ? 20.0 : (h[i] < -20.0 ? -20.0 : h[i]);
        double e = expm1(2.0 * a);
        h[i] = e / (e + 2.0);
    }
#endif
}

/* Equivalent to `y[:n] = np.exp((y[:n] - m) * s); return y[:n].sum()` (summed in its own order). */
static inline double cs_exp_affine(double *y, ptrdiff_t n, double m, double s)
{
#ifdef __AVX512F__
    const __m512d vm = _mm512_set1_pd(m), vs = _mm512_set1_pd(s);
    __m512d sum = _mm512_setzero_pd();
    for (ptrdiff_t i = 0; i < n; i += 8) {
        __mmask8 k = cs_tail(n - i);
        __m512d x = _mm512_mul_pd(_mm512_sub_pd(_mm512_maskz_loadu_pd(k, y + i), vm), vs);
        __m512d e = _mm512_maskz_mov_pd(k, cs_exp8(x));
        _mm512_mask_storeu_pd(y + i, k, e);
        sum = _mm512_add_pd(sum, e);
    }
    return _mm512_reduce_add_pd(sum);
#else
    double sum = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        y[i] = exp((y[i] - m) * s);
        sum += y[i];
    }
    return sum;
#endif
}

/* Keep the k largest of w[:V] (0 < k < V; on ties at the k-th, the first in index order), set the
 * rest to 0 and return the sum of the kept: samplers.cut_top_k before its renormalisation. The k-th
 * largest comes from a quickselect on a copy in s (V doubles of scratch). */
static inline double cs_cut_top_k(double *w, ptrdiff_t V, ptrdiff_t k, double *s)
{
    ptrdiff_t lo = 0, hi = V - 1, want = k - 1, greater = 0;
    memcpy(s, w, V * sizeof(double));
    while (lo < hi) {                        /* Hoare partition, largest first */
        double pivot = s[lo + (hi - lo) / 2];
        ptrdiff_t i = lo, j = hi;
        while (i <= j) {
            while (s[i] > pivot) i++;
            while (s[j] < pivot) j--;
            if (i <= j) {
                double t = s[i]; s[i] = s[j]; s[j] = t;
                i++; j--;
            }
        }
        if (want <= j) hi = j;               /* s[lo..j] >= pivot >= s[i..hi], s[j+1..i-1] == pivot */
        else if (want >= i) lo = i;
        else break;
    }
    double thr = s[want], sum = 0.0;
    for (ptrdiff_t i = 0; i < V; i++)
        greater += w[i] > thr;
    ptrdiff_t ties = k - greater;            /* how many entries equal to thr to keep */
    for (ptrdiff_t i = 0; i < V; i++) {
        if (w[i] > thr || (w[i] == thr && ties-- > 0))
            sum += w[i];
        else
            w[i] = 0.0;
    }
    return sum;
}

/* Equivalent to `np.searchsorted(np.cumsum(w), u, side="right")` for w >= 0 and 0 <= u < w.sum()
 * (the count of prefix sums <= u), but for the rounding of the sums, and never an index whose
 * weight is 0 (past the end: the last index with w > 0). With AVX-512 there is no branch that
 * depends on u: the prefix sums go eight at a time (a three-step scan in the register, then the
 * carry) and the count is popcounts of comparisons. A mispredicted early exit would throw away
 * the work the core runs ahead on (sample() puts the rest of Whh @ h after the draw). */
static inline ptrdiff_t cs_draw(const double *w, ptrdiff_t V, double u)
{
    ptrdiff_t k;
#ifdef __AVX512F__
    const __m512i up1 = _mm512_set_epi64(6, 5, 4, 3, 2, 1, 0, 0), up2 = _mm512_set_epi64(5, 4, 3, 2, 1, 0, 0, 0),
                  up4 = _mm512_set_epi64(3, 2, 1, 0, 0, 0, 0, 0), last = _mm512_set1_epi64(7);
    const __m512d vu = _mm512_set1_pd(u);
    __m512d carry = _mm512_setzero_pd();
    ptrdiff_t count = 0;
    for (ptrdiff_t i = 0; i < V; i += 8) {
        __mmask8 m = cs_tail(V - i);
        __m512d c = _mm512_maskz_loadu_pd(m, w + i);
        c = _mm512_add_pd(c, _mm512_maskz_permutexvar_pd(0xFE, up1, c));
        c = _mm512_add_pd(c, _mm512_maskz_permutexvar_pd(0xFC, up2, c));
        c = _mm512_add_pd(c, _mm512_maskz_permutexvar_pd(0xF0, up4, c));
        c = _mm512_add_pd(c, carry);
        count += __builtin_popcount((unsigned)_mm512_mask_cmp_pd_mask(m, c, vu, _CMP_LE_OQ));
        carry = _mm512_permutexvar_pd(last, c);
    }
    k = count < V ? count : V - 1;
    if (w[k] > 0)
        return k;
#endif
    double c = 0.0;                    /* (with AVX-512: a zero weight, met only by rounding) */
    for (k = 0; k < V; k++) {
        c += w[k];
        if (u < c && w[k] > 0)
            return k;
    }
    for (k = V - 1; k > 0; k--)
        if (w[k] > 0)
            return k;
    return 0;
}

/* Equivalent to `y[:n] = np.exp(y[:n] - m[:n])`. */
static inline void cs_exp_sub(double *y, const double *m, ptrdiff_t n)
{
#ifdef __AVX512F__
    for (ptrdiff_t i = 0; i < n; i += 8) {
        __mmask8 k = cs_tail(n - i);
        __m512d x = _mm512_sub_pd(_mm512_maskz_loadu_pd(k, y + i), _mm512_maskz_loadu_pd(k, m + i));
        _mm512_mask_storeu_pd(y + i, k, cs_exp8(x));
    }
#else
    for (ptrdiff_t i = 0; i < n; i++)
        y[i] = exp(y[i] - m[i]);
#endif
}

/* Equivalent to `1 / sqrt(x)` for normal x > 0, within a few ulp: the classic bit-level first guess
 * (3.4% off) refined by four Newton steps (error 3.4e-2 -> 1.7e-3 -> 4.5e-6 -> 3e-11 -> rounding).
 * Plain arithmetic that gcc vectorises, about 4x cheaper than the sqrt and divide it replaces. */
static inline double cs_rsqrt(double x)
{
    unsigned long long bits;
    double y, hx = 0.5 * x;
    memcpy(&bits, &x, sizeof bits);
    bits = 0x5FE6EB50C7B537A9ULL - (bits >> 1);
    memcpy(&y, &bits, sizeof y);
    y = y * (1.5 - hx * y * y);
    y = y * (1.5 - hx * y * y);
    y = y * (1.5 - hx * y * y);
    y = y * (1.5 - hx * y * y);
    return y;
}

/* min-char-rnn's Adagrad on n entries: `d = clip(d, -5, 5); m += d * d; p += -lr * d / sqrt(m + 1e-8)`
 * (d itself is left unclipped). With AVX-512, eight entries at a time start from the hardware's
 * 14-bit 1/sqrt (vrsqrt14pd) and need two Newton steps (error 6e-5 -> 5e-9 -> rounding) where
 * cs_rsqrt needs four: an H=100 update took 8.5 us instead of 11.2, now bound by L2 bandwidth.
 * -ffast-math assumes no NaN, so a NaN gradient may come out clipped: train_chunk never steps on a
 * non-finite loss, which any NaN in the gradients implies. */
static inline void cs_adagrad(double *p, const double *d, double *m, ptrdiff_t n, double lr)
{
    ptrdiff_t i = 0;
#ifdef __AVX512F__
    const __m512d hi = _mm512_set1_pd(5.0), lo = _mm512_set1_pd(-5.0), eps = _mm512_set1_pd(1e-8),
                  half = _mm512_set1_pd(0.5), three_halves = _mm512_set1_pd(1.5), nlr = _mm512_set1_pd(-lr);
    for (; i + 8 <= n; i += 8) {
        __m512d g = _mm512_min_pd(hi, _mm512_max_pd(lo, _mm512_loadu_pd(d + i)));
        __m512d mi = _mm512_fmadd_pd(g, g, _mm512_loadu_pd(m + i));
        _mm512_storeu_pd(m + i, mi);
        __m512d x = _mm512_add_pd(mi, eps), hx = _mm512_mul_pd(half, x);
        __m512d y = _mm512_rsqrt14_pd(x);
        y = _mm512_mul_pd(y, _mm512_fnmadd_pd(_mm512_mul_pd(hx, y), y, three_halves));
        y = _mm512_mul_pd(y, _mm512_fnmadd_pd(_mm512_mul_pd(hx, y), y, three_halves));
        _mm512_storeu_pd(p + i, _mm512_fmadd_pd(_mm512_mul_pd(nlr, g), y, _mm512_loadu_pd(p + i)));
    }
#endif
    for (; i < n; i++) {
        double g = d[i];
        g = g > 5.0 ? 5.0 : g;
        g = g < -5.0 ? -5.0 : g;
        m[i] += g * g;
        p[i] += -lr * g * cs_rsqrt(m[i] + 1e-8);
    }
}

#endif
