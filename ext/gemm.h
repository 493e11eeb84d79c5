/* cs_gemm_acc over one floating type: a template, included by ext/kernels.h once per type with
 * CS_REAL (double, float) and CS_NAME (the function names: cs_gemm_acc for double, cs_gemm_acc_f for
 * float). No include guard, on purpose. The operations are the same for both types: the main block
 * is 4 rows x 4 vectors of C, a vector being 8 * CS_W bytes (CS_W doubles, 2 CS_W floats). */

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

static inline void CS_NAME(cs_gemm_acc)(CS_REAL *C, ptrdiff_t ldc, const CS_REAL *A, ptrdiff_t ars, ptrdiff_t acs,
                                        const CS_REAL *B, ptrdiff_t ldb, ptrdiff_t M, ptrdiff_t K, ptrdiff_t N, int add)
{
    ptrdiff_t i = 0;
#ifdef CS_VECTOR
    typedef CS_NAME(cs_gw) vw;
    typedef CS_NAME(cs_g4) v4;
    const ptrdiff_t W = 8 * CS_W / sizeof(CS_REAL);
    ptrdiff_t N16 = N - N % (4 * W), N4 = N - N % 4;
    /* 4 rows x 4 vectors of C in 16 vector registers: per k, 4 loads of B and 4 broadcasts of A
     * feed 16 vector FMAs. */
    for (; i + 4 <= M; i += 4) {
        const CS_REAL *a = A + i * ars;
        for (ptrdiff_t j = 0; j < N16; j += 4 * W) {
            vw c00 = {0}, c01 = {0}, c02 = {0}, c03 = {0};
            vw c10 = {0}, c11 = {0}, c12 = {0}, c13 = {0};
            vw c20 = {0}, c21 = {0}, c22 = {0}, c23 = {0};
            vw c30 = {0}, c31 = {0}, c32 = {0}, c33 = {0};
            for (ptrdiff_t k = 0; k < K; k++) {
                const CS_REAL *b = B + k * ldb + j;
                vw b0 = CS_NAME(cs_gloadw)(b), b1 = CS_NAME(cs_gloadw)(b + W), b2 = CS_NAME(cs_gloadw)(b + 2 * W),
                   b3 = CS_NAME(cs_gloadw)(b + 3 * W);
                CS_REAL a0 = a[k * acs], a1 = a[ars + k * acs], a2 = a[2 * ars + k * acs],
                        a3 = a[3 * ars + k * acs];
                c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
                c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
                c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
            }
            CS_REAL *c = C + i * ldc + j;
            CS_NAME(cs_gputw)(c, c00, add); CS_NAME(cs_gputw)(c + W, c01, add);
            CS_NAME(cs_gputw)(c + 2 * W, c02, add); CS_NAME(cs_gputw)(c + 3 * W, c03, add);
            c += ldc;
            CS_NAME(cs_gputw)(c, c10, add); CS_NAME(cs_gputw)(c + W, c11, add);
            CS_NAME(cs_gputw)(c + 2 * W, c12, add); CS_NAME(cs_gputw)(c + 3 * W, c13, add);
            c += ldc;
            CS_NAME(cs_gputw)(c, c20, add); CS_NAME(cs_gputw)(c + W, c21, add);
            CS_NAME(cs_gputw)(c + 2 * W, c22, add); CS_NAME(cs_gputw)(c + 3 * W, c23, add);
            c += ldc;
            CS_NAME(cs_gputw)(c, c30, add); CS_NAME(cs_gputw)(c + W, c31, add);
            CS_NAME(cs_gputw)(c + 2 * W, c32, add); CS_NAME(cs_gputw)(c + 3 * W, c33, add);
        }
        for (ptrdiff_t j = N16; j < N4; j += 4) {
            v4 c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
            for (ptrdiff_t k = 0; k < K; k++) {
                v4 b0 = CS_NAME(cs_gload4)(B + k * ldb + j);
                c0 += a[k * acs] * b0; c1 += a[ars + k * acs] * b0;
                c2 += a[2 * ars + k * acs] * b0; c3 += a[3 * ars + k * acs] * b0;
            }
            CS_REAL *c = C + i * ldc + j;
            CS_NAME(cs_gput4)(c, c0, add); CS_NAME(cs_gput4)(c + ldc, c1, add);
            CS_NAME(cs_gput4)(c + 2 * ldc, c2, add); CS_NAME(cs_gput4)(c + 3 * ldc, c3, add);
        }
        for (ptrdiff_t q = 0; q < 4; q++)
            CS_NAME(cs_gemm_tail)(C + (i + q) * ldc, a + q * ars, acs, B, ldb, K, N4, N, add);
    }
    for (; i < M; i++) {
        const CS_REAL *a = A + i * ars;
        for (ptrdiff_t j = 0; j < N16; j += 4 * W) {
            vw c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
            for (ptrdiff_t k = 0; k < K; k++) {
                const CS_REAL *b = B + k * ldb + j;
                CS_REAL a0 = a[k * acs];
                c0 += a0 * CS_NAME(cs_gloadw)(b); c1 += a0 * CS_NAME(cs_gloadw)(b + W);
                c2 += a0 * CS_NAME(cs_gloadw)(b + 2 * W); c3 += a0 * CS_NAME(cs_gloadw)(b + 3 * W);
            }
            CS_REAL *c = C + i * ldc + j;
            CS_NAME(cs_gputw)(c, c0, add); CS_NAME(cs_gputw)(c + W, c1, add);
            CS_NAME(cs_gputw)(c + 2 * W, c2, add); CS_NAME(cs_gputw)(c + 3 * W, c3, add);
        }
        for (ptrdiff_t j = N16; j < N4; j += 4) {
            v4 c0 = {0};
            for (ptrdiff_t k = 0; k < K; k++)
                c0 += a[k * acs] * CS_NAME(cs_gload4)(B + k * ldb + j);
            CS_NAME(cs_gput4)(C + i * ldc + j, c0, add);
        }
        CS_NAME(cs_gemm_tail)(C + i * ldc, a, acs, B, ldb, K, N4, N, add);
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
#endif
}
