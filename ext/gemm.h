/* cs_gemm_acc over one floating type: a template, included by ext/kernels.h once per type with
 * CS_REAL (double, float) and CS_NAME (the function names: cs_gemm_acc for double, cs_gemm_acc_f for
 * float). No include guard, on purpose. The operations are the same for both types: the main block
 * is CS_GEMM_MR rows x CS_GEMM_NV vectors of C (kernels.h), a vector being 8 * CS_W bytes (CS_W doubles, 2 CS_W
 * floats). */

#ifdef CS_VECTOR
typedef CS_REAL CS_NAME(cs_gw) __attribute__((vector_size(8 * CS_W)));          /* the main block's vector */
typedef CS_REAL CS_NAME(cs_g4) __attribute__((vector_size(4 * sizeof(CS_REAL)))); /* four of the type */
static inline CS_NAME(cs_gw) CS_NAME(cs_gloadw)(const CS_REAL *p)
{ CS_NAME(cs_gw) v; memcpy(&v, p, sizeof v); return v; }
static inline void CS_NAME(cs_gputw)(CS_REAL *p, CS_NAME(cs_gw) v, int add)
{ if (add) v += CS_NAME(cs_gloadw)(p); memcpy(p, &v, sizeof v); }
static inline CS_NAME(cs_g4) CS_NAME(cs_gload4)(const CS_REAL *p)
{ CS_NAME(cs_g4) v; memcpy(&v, p, sizeof v); return v; }
static inline void CS_NAME(cs_gput4)(CS_REAL *p, CS_NAME(cs_g4) v, int add)
{ if (add) v += CS_NAME(cs_gload4)(p); memcpy(p, &v, sizeof v); }
#endif

/* c[j0:N] (+)= a[::acs][:K] @ B[:K, j0:N], one column at a time. */
static inline void CS_NAME(cs_gemm_tail)(CS_REAL *c, const CS_REAL *a, ptrdiff_t acs, const CS_REAL *B,
                                         ptrdiff_t ldb, ptrdiff_t K, ptrdiff_t j0, ptrdiff_t N, int add)
{
    for (ptrdiff_t j = j0; j < N; j++) {
        CS_REAL s = 0.0;
        for (ptrdiff_t k = 0; k < K; k++)
            s += a[k * acs] * B[k * ldb + j];
        c[j] = add ? c[j] + s : s;
    }
}

#ifdef CS_VECTOR
/* C[:rows, j:j + nv W] (+)= A[:rows, :K] @ B[:K, j:j + nv W]: rows x nv vectors of C in registers,
 * per k nv loads of B and `rows` broadcasts of A. b is the block's first column of B (bs its row
 * stride, ps = CS_GEMM_NV W) or of its first panel (bs the panel's width, ps a panel's size): vector
 * v is at b + (v / CS_GEMM_NV) ps + (v % CS_GEMM_NV) W. `rows` and `nv` are constants wherever it is
 * called (always inlined). */
static inline __attribute__((always_inline)) void CS_NAME(cs_gblock)(
    CS_REAL *C, ptrdiff_t ldc, const CS_REAL *a, ptrdiff_t ars, ptrdiff_t acs, const CS_REAL *b, ptrdiff_t bs,
    ptrdiff_t ps, ptrdiff_t K, const int rows, const int nv, int add)
{
    typedef CS_NAME(cs_gw) vw;
    const ptrdiff_t W = 8 * CS_W / sizeof(CS_REAL);
    vw c[CS_GEMM_MR][2 * CS_GEMM_NV];
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++)
            c[r][v] = (vw){0};
    for (ptrdiff_t k = 0; k < K; k++, b += bs) {
        vw bv[2 * CS_GEMM_NV];
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++)
            bv[v] = CS_NAME(cs_gloadw)(b + (v / CS_GEMM_NV) * ps + (v % CS_GEMM_NV) * W);
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++) {
            CS_REAL ar = a[r * ars + k * acs];
#pragma GCC unroll 8
            for (int v = 0; v < nv; v++)
                c[r][v] += ar * bv[v];
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++)
            CS_NAME(cs_gputw)(C + r * ldc + v * W, c[r][v], add);
}

/* C[:rows, j0:N] (+)= A[:rows, :K] @ B[:K, j0:N] for the columns after the blocks: 4 at a time, then one. */
static inline __attribute__((always_inline)) void CS_NAME(cs_gcols)(
    CS_REAL *C, ptrdiff_t ldc, const CS_REAL *a, ptrdiff_t ars, ptrdiff_t acs, const CS_REAL *B, ptrdiff_t ldb,
    ptrdiff_t K, ptrdiff_t j0, ptrdiff_t N, const int rows, int add)
{
    typedef CS_NAME(cs_g4) v4;
    ptrdiff_t N4 = j0 + (N - j0) / 4 * 4;
    for (ptrdiff_t j = j0; j < N4; j += 4) {
        v4 c[CS_GEMM_MR];
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++)
            c[r] = (v4){0};
        for (ptrdiff_t k = 0; k < K; k++) {
            v4 b0 = CS_NAME(cs_gload4)(B + k * ldb + j);
#pragma GCC unroll 8
            for (int r = 0; r < rows; r++)
                c[r] += a[r * ars + k * acs] * b0;
        }
#pragma GCC unroll 8
        for (int r = 0; r < rows; r++)
            CS_NAME(cs_gput4)(C + r * ldc + j, c[r], add);
    }
    for (int r = 0; r < rows; r++)
        CS_NAME(cs_gemm_tail)(C + r * ldc, a + r * ars, acs, B, ldb, K, N4, N, add);
}

/* Rows i0:i0 + rows of C: their blocks of CS_GEMM_NV vectors (from Bp's panels, if given), then the rest. */
static inline __attribute__((always_inline)) void CS_NAME(cs_grows)(
    CS_REAL *C, ptrdiff_t ldc, const CS_REAL *a, ptrdiff_t ars, ptrdiff_t acs, const CS_REAL *B, ptrdiff_t ldb,
    const CS_REAL *Bp, ptrdiff_t K, ptrdiff_t N, const int rows, int add)
{
    const ptrdiff_t P = CS_GEMM_NV * (8 * CS_W / (ptrdiff_t)sizeof(CS_REAL));   /* a panel's columns */
    ptrdiff_t Nb = N - N % P, j = 0, bs = Bp ? P : ldb, ps = Bp ? K * P : P;
#define CS_GB(nv) CS_NAME(cs_gblock)(C + j, ldc, a, ars, acs, Bp ? Bp + (j / P) * K * P : B + j, bs, ps, K, rows, nv, add)
    if (2 * rows < CS_GEMM_MR)   /* few rows: two panels at a time, for enough independent sums */
        for (; j + 2 * P <= Nb; j += 2 * P)
            CS_GB(2 * CS_GEMM_NV);
    for (; j < Nb; j += P)
        CS_GB(CS_GEMM_NV);
#undef CS_GB
    CS_NAME(cs_gcols)(C, ldc, a, ars, acs, B, ldb, K, Nb, N, rows, add);
}
#endif

/* cs_gemm_acc, where the main blocks may read B from Bp instead: B's first N - N % P columns packed in
 * panels of P = CS_GEMM_NV vectors, Bp[(q * K + k) * P + c] = B[k, P q + c] (a panel's K rows in one
 * stretch, where B's rows a power of two apart fall into one L1 set). The same sums either way.
 * The main block is CS_GEMM_MR rows x CS_GEMM_NV vectors of C (kernels.h: 4 x 4 zmm with AVX-512's 32
 * registers, 6 x 2 ymm with AVX2's 16, where 4 x 4 spilled: 55 against 93 GFLOP/s of float32 on one
 * Zen 3 core); the last M % CS_GEMM_MR rows are one block of fewer rows. Every element of C is summed over
 * k in order, one multiply-add at a time, by whichever block computes it: the same bits for any M. */
static inline void CS_NAME(cs_gemm_pk)(CS_REAL *C, ptrdiff_t ldc, const CS_REAL *A, ptrdiff_t ars, ptrdiff_t acs,
                                       const CS_REAL *B, ptrdiff_t ldb, const CS_REAL *Bp, ptrdiff_t M, ptrdiff_t K,
                                       ptrdiff_t N, int add)
{
    ptrdiff_t i = 0;
#ifdef CS_VECTOR
    for (; i + CS_GEMM_MR <= M; i += CS_GEMM_MR)
        CS_NAME(cs_grows)(C + i * ldc, ldc, A + i * ars, ars, acs, B, ldb, Bp, K, N, CS_GEMM_MR, add);
    switch (M - i) {   /* each case a block of that many rows, in registers */
    case 0: break;
    case 1: CS_NAME(cs_grows)(C + i * ldc, ldc, A + i * ars, ars, acs, B, ldb, Bp, K, N, 1, add); break;
    case 2: CS_NAME(cs_grows)(C + i * ldc, ldc, A + i * ars, ars, acs, B, ldb, Bp, K, N, 2, add); break;
    case 3: CS_NAME(cs_grows)(C + i * ldc, ldc, A + i * ars, ars, acs, B, ldb, Bp, K, N, 3, add); break;
#if CS_GEMM_MR > 4
    case 4: CS_NAME(cs_grows)(C + i * ldc, ldc, A + i * ars, ars, acs, B, ldb, Bp, K, N, 4, add); break;
    case 5: CS_NAME(cs_grows)(C + i * ldc, ldc, A + i * ars, ars, acs, B, ldb, Bp, K, N, 5, add); break;
#endif
    }
#else
    /* without AVX (the baseline path), rows of B added into a row of C: gcc vectorises it with SSE2 */
    for (; i < M; i++) {
        CS_REAL *c = C + i * ldc;
        if (!add)
            memset(c, 0, N * sizeof(CS_REAL));
        for (ptrdiff_t k = 0; k < K; k++) {
            CS_REAL a = A[i * ars + k * acs];
            const CS_REAL *b = B + k * ldb;
            for (ptrdiff_t j = 0; j < N; j++)
                c[j] += a * b[j];
        }
    }
    (void)Bp;
#endif
}

static inline void CS_NAME(cs_gemm_acc)(CS_REAL *C, ptrdiff_t ldc, const CS_REAL *A, ptrdiff_t ars, ptrdiff_t acs,
                                        const CS_REAL *B, ptrdiff_t ldb, ptrdiff_t M, ptrdiff_t K, ptrdiff_t N, int add)
{
    CS_NAME(cs_gemm_pk)(C, ldc, A, ars, acs, B, ldb, NULL, M, K, N, add);
}
