/* LaneKernel's algorithm over one floating type: a template, included by ext/lanes.h once per type with
 * CS_REAL (double, float), CS_NAME (names: _d, _f), CS_CELL (the type's cell functions), CS_TANH,
 * CS_EXP_AFFINE and CS_ADAGRAD. No include guard, on purpose.
 *
 * Layout: a step's states are rows, one per lane: hs[l, t] is (B, H), so a step's recurrence is one
 * product (B, H) @ Whh^T (H, G*H) and a layer's whole chunk (T*B, H) feeds the next layer and the head
 * in one product each. The functions below are called by every thread of a team (or by one thread
 * outside any team): their `omp for` loops share the work, and each ends on the team's barrier.
 */

#define R CS_REAL
#define F(p) ((CS_REAL *)(p))

#ifdef CS_VECTOR
#define CS_PW ((ptrdiff_t)(CS_GEMM_NV * 8 * CS_W / sizeof(CS_REAL)))   /* cs_gemm_pk's panel width */
#else
#define CS_PW ((ptrdiff_t)1 << 40)                            /* no panels without vector registers */
#endif

/* Equivalent to `C[:M, :N] (+)= A[:M, :K] @ B[:K, :N]` (cs_gemm_pk's arguments, Bp B's panels or
 * NULL), tile by tile. */
static void CS_NAME(cs_pgemm)(R *C, ptrdiff_t ldc, const R *A, ptrdiff_t ars, ptrdiff_t acs, const R *B,
                              ptrdiff_t ldb, const R *Bp, ptrdiff_t M, ptrdiff_t K, ptrdiff_t N, int add)
{
    ptrdiff_t mt = (M + CS_LANE_MB - 1) / CS_LANE_MB, nt = (N + CS_LANE_NB - 1) / CS_LANE_NB, q;
    #pragma omp for schedule(static)
    for (q = 0; q < mt * nt; q++) {
        ptrdiff_t i0 = (q / nt) * CS_LANE_MB, j0 = (q % nt) * CS_LANE_NB;
        ptrdiff_t m = M - i0 < CS_LANE_MB ? M - i0 : CS_LANE_MB, n = N - j0 < CS_LANE_NB ? N - j0 : CS_LANE_NB;
        CS_CELL(cs_gemm_pk)(C + i0 * ldc + j0, ldc, A + i0 * ars, ars, acs, B + j0, ldb,
                            Bp ? Bp + (j0 / CS_PW) * K * CS_PW : NULL, m, K, n, add);
    }
}

/* Bp = the panels of B (K, N) for cs_gemm_pk: its first N - N % CS_PW columns, CS_PW to a panel; with
 * trans, of B = A.T for A (N, K) with rows lda apart. A task per panel. */
static void CS_NAME(cs_ppack)(const R *A, ptrdiff_t lda, ptrdiff_t K, ptrdiff_t N, int trans, R *Bp)
{
#ifdef CS_VECTOR
    ptrdiff_t q;
    #pragma omp for schedule(static)
    for (q = 0; q < N / CS_PW; q++) {
        R *dst = Bp + q * K * CS_PW;
        if (!trans)
            for (ptrdiff_t k = 0; k < K; k++)
                memcpy(dst + k * CS_PW, A + k * lda + q * CS_PW, CS_PW * sizeof(R));
        else
            for (ptrdiff_t c = 0; c < CS_PW; c++)
                for (ptrdiff_t k = 0; k < K; k++)
                    dst[k * CS_PW + c] = A[(q * CS_PW + c) * lda + k];
    }
#else
    (void)A; (void)lda; (void)K; (void)N; (void)trans; (void)Bp;
#endif
}

/* Where the weights' panels go in c->wP: per layer l, opk[4l] Whh^T (H, GH), opk[4l+1] Wxh^T (l > 0),
 * opk[4l+2] Whh (GH, H), opk[4l+3] Wxh (l > 0); then opk[4L] Why^T (H, V), opk[4L+1] Why (V, H).
 * Returns the elements they take. */
static ptrdiff_t CS_NAME(cs_lanes_layout)(const cs_lanes *c, ptrdiff_t *opk)
{
    ptrdiff_t H = c->H, GH = c->GH, V = c->V, off = 0;
#define CS_PANELS_OF(K, N) ((N) / CS_PW * CS_PW * (K))
    for (ptrdiff_t l = 0; l < c->L; l++) {
        opk[4 * l] = off; off += CS_PANELS_OF(H, GH);
        opk[4 * l + 1] = off; off += l > 0 ? CS_PANELS_OF(H, GH) : 0;
        opk[4 * l + 2] = off; off += CS_PANELS_OF(GH, H);
        opk[4 * l + 3] = off; off += l > 0 ? CS_PANELS_OF(GH, H) : 0;
    }
    opk[4 * c->L] = off; off += CS_PANELS_OF(H, V);
    opk[4 * c->L + 1] = off; off += CS_PANELS_OF(V, H);
#undef CS_PANELS_OF
    return off;
}

/* Equivalent to `Bt[:n, :m] = A[:m, :n].T` for A's rows lda apart and Bt's ldb apart, eight rows of A
 * a task. */
static void CS_NAME(cs_ptranspose)(const R *A, ptrdiff_t m, ptrdiff_t n, ptrdiff_t lda, R *Bt, ptrdiff_t ldb)
{
    ptrdiff_t q;
    #pragma omp for schedule(static)
    for (q = 0; q < (m + 7) / 8; q++) {
        ptrdiff_t g0 = 8 * q, g1 = g0 + 8 < m ? g0 + 8 : m;
        for (ptrdiff_t k = 0; k < n; k++)
            for (ptrdiff_t g = g0; g < g1; g++)
                Bt[k * ldb + g] = A[g * lda + k];
    }
}

/* The transposes the products read (wT, wx0T), from the current weights. */
static void CS_NAME(cs_lanes_prepare)(cs_lanes *c)
{
    ptrdiff_t H = c->H, GH = c->GH, V = c->V;
    for (ptrdiff_t l = 0; l < c->L; l++) {
        CS_NAME(cs_ptranspose)(F(c->Wh[l]), GH, H, H, F(c->wT) + c->offh[l], GH);
        if (l > 0)
            CS_NAME(cs_ptranspose)(F(c->Wx[l]), GH, H, H, F(c->wT) + c->offx[l], GH);
    }
    CS_NAME(cs_ptranspose)(F(c->Why), V, H, H, F(c->wT) + c->offy, V);
    CS_NAME(cs_ptranspose)(F(c->Wx[0]), GH, V, V, F(c->wx0T), GH);
    R *P = F(c->wP);
    const ptrdiff_t *o = c->opk;
    for (ptrdiff_t l = 0; l < c->L; l++) {
        CS_NAME(cs_ppack)(F(c->Wh[l]), H, H, GH, 1, P + o[4 * l]);
        CS_NAME(cs_ppack)(F(c->Wh[l]), H, GH, H, 0, P + o[4 * l + 2]);
        if (l > 0) {
            CS_NAME(cs_ppack)(F(c->Wx[l]), H, H, GH, 1, P + o[4 * l + 1]);
            CS_NAME(cs_ppack)(F(c->Wx[l]), H, GH, H, 0, P + o[4 * l + 3]);
        }
    }
    CS_NAME(cs_ppack)(F(c->Why), H, H, V, 1, P + o[4 * c->L]);
    CS_NAME(cs_ppack)(F(c->Why), H, V, H, 0, P + o[4 * c->L + 1]);
}

/* Dropout of layer l's outputs h_1..h_n (rows (t, b)): dm[l] = 0 or 1/keep by the counter hash of
 * lanes.h (cs_drop_key), hd[l] = hs[l, 1:n+1] * dm[l]. Equivalent numpy: tests/oracle_cells.py, drop_masks. */
static void CS_NAME(cs_lanes_drop)(cs_lanes *c, ptrdiff_t l, ptrdiff_t n)
{
    ptrdiff_t H = c->H, B = c->B, T = c->T, r;
    const R *h = F(c->hs) + l * (T + 1) * B * H + B * H;
    R *m = F(c->dm) + l * T * B * H, *hd = F(c->hd) + l * T * B * H, keep = (R)c->dscale;
    #pragma omp for schedule(static)
    for (r = 0; r < n * B; r++) {
        uint64_t base = c->dkey + (uint64_t)((l * T + r / B) * B + r % B) * (uint64_t)H;
        for (ptrdiff_t i = 0; i < H; i++) {
            R k = (cs_splitmix64(base + (uint64_t)i) >> 11) < c->keep_bits ? keep : (R)0;
            m[r * H + i] = k;
            hd[r * H + i] = h[r * H + i] * k;
        }
    }
}

/* Equivalent to `d[:n*B*H] *= dm[l, :n*B*H]`: a gradient through layer l's dropped outputs. */
static void CS_NAME(cs_lanes_undrop)(cs_lanes *c, ptrdiff_t l, ptrdiff_t n, R *d)
{
    ptrdiff_t H = c->H, B = c->B, r;
    const R *m = F(c->dm) + l * c->T * B * H;
    #pragma omp for schedule(static)
    for (r = 0; r < n * B; r++)
        for (ptrdiff_t i = 0; i < H; i++)
            d[r * H + i] *= m[r * H + i];
}

/* Layer l's outputs h_1..h_n as the layer above and the head read them: dropped when dropout is on. */
static const R *CS_NAME(cs_lanes_out)(const cs_lanes *c, ptrdiff_t l)
{
    ptrdiff_t H = c->H, B = c->B, T = c->T;
    return c->keep_bits ? F(c->hd) + l * T * B * H : F(c->hs) + l * (T + 1) * B * H + B * H;
}

/* Forward through n steps of every layer on every lane, from state (B, S): fills hs, cs, acts, aux. */
static void CS_NAME(cs_lanes_forward)(cs_lanes *c, const int *xs, ptrdiff_t ldx, ptrdiff_t n, const R *state)
{
    ptrdiff_t H = c->H, GH = c->GH, B = c->B, S = c->S, SC = c->SC, T = c->T, l, t, b, r;
    int lstm = c->cell == CS_LSTM;
    R *z = F(c->z);
    for (l = 0; l < c->L; l++) {
        R *hsl = F(c->hs) + l * (T + 1) * B * H, *csl = F(c->cs) + (lstm ? l : 0) * (T + 1) * B * H;
        R *A = F(c->acts) + l * T * B * GH, *X = F(c->aux) + l * T * B * H;
        const R *bl = F(c->b[l]), *WhT = F(c->wT) + c->offh[l];
        #pragma omp for schedule(static)
        for (b = 0; b < B; b++) {
            memcpy(hsl + b * H, state + b * S + l * SC * H, H * sizeof(R));
            if (lstm)
                memcpy(csl + b * H, state + b * S + l * SC * H + H, H * sizeof(R));
        }
        if (l == 0) {          /* a = Wxh[:, x] + bh, row (t, b) for lane b's input t */
            const R *w0 = F(c->wx0T);
            #pragma omp for schedule(static)
            for (r = 0; r < n * B; r++) {
                const R *wx = w0 + (ptrdiff_t)xs[(r % B) * ldx + r / B] * GH;
                for (ptrdiff_t g = 0; g < GH; g++)
                    A[r * GH + g] = wx[g] + bl[g];
            }
        } else {               /* a = hs_below[1:n+1] @ Wxh^T + bh, one product */
            #pragma omp for schedule(static)
            for (r = 0; r < n * B; r++)
                memcpy(A + r * GH, bl, GH * sizeof(R));
            CS_NAME(cs_pgemm)(A, GH, CS_NAME(cs_lanes_out)(c, l - 1), H, 1,
                              F(c->wT) + c->offx[l], GH, F(c->wP) + c->opk[4 * l + 1], n * B, H, GH, 1);
        }
        for (t = 0; t < n; t++) {
            CS_NAME(cs_pgemm)(z, GH, hsl + t * B * H, H, 1, WhT, GH, F(c->wP) + c->opk[4 * l], B, H, GH, 0);  /* h @ Whh^T */
            #pragma omp for schedule(static)
            for (b = 0; b < B; b++) {
                ptrdiff_t o = t * B + b;
                CS_CELL(cs_cell_forward)(c->cell, H, A + o * GH, z + b * GH, hsl + o * H, csl + o * H,
                                         hsl + (o + B) * H, csl + (o + B) * H, X + o * H);
            }
        }
        if (c->keep_bits)
            CS_NAME(cs_lanes_drop)(c, l, n);
    }
}

/* The softmax head over the top layer's n*B states: rowloss, dy = scale (p - onehot) in ys, dWhy,
 * dby, and the top layer's dhx. The summed loss goes to c->loss. */
static void CS_NAME(cs_lanes_head)(cs_lanes *c, const int *xs, ptrdiff_t ldx, ptrdiff_t n, R scale)
{
    ptrdiff_t H = c->H, V = c->V, Vp = c->Vp, B = c->B, T = c->T, nB = n * B, ldT = c->ldT, r, v;
    const R *top = CS_NAME(cs_lanes_out)(c, c->L - 1);                /* (nB, H): h_1 .. h_n, dropped */
    (void)T;
    R *ys = F(c->ys), *tT = F(c->tT);
    const R *by = F(c->by);
    #pragma omp for schedule(static)
    for (r = 0; r < nB; r++)
        memcpy(ys + r * Vp, by, V * sizeof(R));
    CS_NAME(cs_pgemm)(ys, Vp, top, H, 1, F(c->wT) + c->offy, V, F(c->wP) + c->opk[4 * c->L], nB, H, V, 1);
    #pragma omp for schedule(static)
    for (r = 0; r < nB; r++) {
        R *y = ys + r * Vp, m = y[0];
        ptrdiff_t k = xs[(r % B) * ldx + r / B + 1];
        R yk = y[k];
        for (v = 1; v < V; v++)
            m = y[v] > m ? y[v] : m;
        double s = CS_EXP_AFFINE(y, V, m, (R)1.0);
        c->rowloss[r] = log(s) + (double)m - (double)yk;
        R inv = (R)(1.0 / s) * scale;
        for (v = 0; v < V; v++)
            y[v] *= inv;
        y[k] -= scale;
    }
    #pragma omp single
    {
        double loss = 0.0;
        for (r = 0; r < nB; r++)
            loss += c->rowloss[r];
        c->loss = loss;
    }
    CS_NAME(cs_ptranspose)(ys, nB, V, Vp, tT, ldT);                       /* dY^T (V, nB) */
    CS_NAME(cs_ppack)(top, H, nB, H, 0, F(c->pk));
    CS_NAME(cs_pgemm)(F(c->dWhy), H, tT, ldT, 1, top, H, F(c->pk), V, nB, H, 0);    /* dWhy = dY^T @ Hs */
    #pragma omp for schedule(static)
    for (v = 0; v < V; v++) {
        R g = 0;
        for (r = 0; r < nB; r++)
            g += tT[v * ldT + r];
        F(c->dby)[v] = g;
    }
    CS_NAME(cs_pgemm)(F(c->dhx) + (c->L - 1) * T * B * H, H, ys, Vp, 1, F(c->Why), H,
                      F(c->wP) + c->opk[4 * c->L + 1], nB, V, H, 0);                    /* dY @ Why */
    if (c->keep_bits)
        CS_NAME(cs_lanes_undrop)(c, c->L - 1, n, F(c->dhx) + (c->L - 1) * T * B * H);
}

/* Backward through time, the layers top down: every weight's gradient, each lower layer's dhx. */
static void CS_NAME(cs_lanes_backward)(cs_lanes *c, const int *xs, ptrdiff_t ldx, ptrdiff_t n)
{
    ptrdiff_t H = c->H, GH = c->GH, V = c->V, B = c->B, T = c->T, nB = n * B, ldT = c->ldT, l, t, b, g, i;
    int lstm = c->cell == CS_LSTM, gru = c->cell == CS_GRU;
    R *tT = F(c->tT), *DA = F(c->da), *DW = gru ? F(c->dw) : F(c->da);
    R *dhnext = F(c->dhnext), *dcn = F(c->dcn), *dhp = F(c->dhp);
    for (l = c->L - 1; l >= 0; l--) {
        R *hsl = F(c->hs) + l * (T + 1) * B * H, *csl = F(c->cs) + (lstm ? l : 0) * (T + 1) * B * H;
        R *A = F(c->acts) + l * T * B * GH, *X = F(c->aux) + l * T * B * H, *D = F(c->dhx) + l * T * B * H;
        const R *Wh = F(c->Wh[l]);
        #pragma omp for schedule(static)
        for (b = 0; b < B; b++) {
            memset(dhnext + b * H, 0, H * sizeof(R));
            memset(dcn + b * H, 0, H * sizeof(R));
        }
        for (t = n - 1; t >= 0; t--) {
            #pragma omp for schedule(static)
            for (b = 0; b < B; b++) {
                ptrdiff_t o = t * B + b;
                R *d = D + o * H;
                for (i = 0; i < H; i++)
                    d[i] += dhnext[b * H + i];
                CS_CELL(cs_cell_backward)(c->cell, H, d, dcn + b * H, A + o * GH, X + o * H, hsl + (o + B) * H,
                                          hsl + o * H, csl + o * H, DA + o * GH, DW + o * GH, dhp + b * H);
            }
            if (t > 0) {       /* dhnext = dw_t @ Whh (+ the GRU's z dh_t) */
                CS_NAME(cs_pgemm)(dhnext, H, DW + t * B * GH, GH, 1, Wh, H, F(c->wP) + c->opk[4 * l + 2], B, GH, H, 0);
                if (gru) {
                    #pragma omp for schedule(static)
                    for (b = 0; b < B; b++)
                        for (i = 0; i < H; i++)
                            dhnext[b * H + i] += dhp[b * H + i];
                }
            }
        }
        CS_NAME(cs_ptranspose)(DW, nB, GH, GH, tT, ldT);                            /* dw^T (GH, nB) */
        CS_NAME(cs_ppack)(hsl, H, nB, H, 0, F(c->pk));
        CS_NAME(cs_pgemm)(F(c->dWh[l]), H, tT, ldT, 1, hsl, H, F(c->pk), GH, nB, H, 0);   /* dWhh = dw^T @ hs[:n] */
        if (gru)
            CS_NAME(cs_ptranspose)(DA, nB, GH, GH, tT, ldT);                        /* da^T */
        #pragma omp for schedule(static)
        for (g = 0; g < GH; g++) {
            R s = 0;
            for (ptrdiff_t r = 0; r < nB; r++)
                s += tT[g * ldT + r];
            F(c->db[l])[g] = s;
        }
        if (l > 0) {
            const R *below = CS_NAME(cs_lanes_out)(c, l - 1);
            CS_NAME(cs_ppack)(below, H, nB, H, 0, F(c->pk));
            CS_NAME(cs_pgemm)(F(c->dWx[l]), H, tT, ldT, 1, below, H, F(c->pk), GH, nB, H, 0);  /* da^T @ h_below */
            CS_NAME(cs_pgemm)(F(c->dhx) + (l - 1) * T * B * H, H, DA, GH, 1, F(c->Wx[l]), H,
                              F(c->wP) + c->opk[4 * l + 3], nB, GH, H, 0);
            if (c->keep_bits)
                CS_NAME(cs_lanes_undrop)(c, l - 1, n, F(c->dhx) + (l - 1) * T * B * H);
        } else {               /* dWxh[:, x] += da_t for each input x: by columns of 64, rows in order */
            R *G0 = F(c->gx0T);
            ptrdiff_t q;
            #pragma omp for schedule(static)
            for (q = 0; q < (GH + 63) / 64; q++) {
                ptrdiff_t g0 = 64 * q, g1 = g0 + 64 < GH ? g0 + 64 : GH;
                for (ptrdiff_t v = 0; v < V; v++)
                    memset(G0 + v * GH + g0, 0, (g1 - g0) * sizeof(R));
                for (ptrdiff_t r = 0; r < nB; r++) {
                    R *gx = G0 + (ptrdiff_t)xs[(r % B) * ldx + r / B] * GH;
                    const R *da = DA + r * GH;
                    for (g = g0; g < g1; g++)
                        gx[g] += da[g];
                }
            }
            CS_NAME(cs_ptranspose)(G0, V, GH, GH, F(c->dWx[0]), V);
        }
    }
}

static double CS_NAME(cs_lanes_chunk)(cs_lanes *c, const int *xs, ptrdiff_t ldx, ptrdiff_t n, R *state, R scale)
{
    c->nlast = n;
    #pragma omp parallel num_threads(c->nt) if (c->nt > 1)
    {
        ptrdiff_t H = c->H, B = c->B, S = c->S, SC = c->SC, T = c->T, b, l;
        CS_NAME(cs_lanes_prepare)(c);
        CS_NAME(cs_lanes_forward)(c, xs, ldx, n, state);
        CS_NAME(cs_lanes_head)(c, xs, ldx, n, scale);
        CS_NAME(cs_lanes_backward)(c, xs, ldx, n);
        #pragma omp for schedule(static)
        for (b = 0; b < B; b++)
            for (l = 0; l < c->L; l++) {
                memcpy(state + b * S + l * SC * H, F(c->hs) + (l * (T + 1) + n) * B * H + b * H, H * sizeof(R));
                if (c->cell == CS_LSTM)
                    memcpy(state + b * S + l * SC * H + H, F(c->cs) + (l * (T + 1) + n) * B * H + b * H, H * sizeof(R));
            }
    }
    c->stale = 0;
    return c->loss;
}

static void CS_NAME(cs_lanes_update)(cs_lanes *c, double lr, double c1, double c2)
{
    #pragma omp parallel num_threads(c->nt) if (c->nt > 1)
    {
        for (ptrdiff_t i = 0; i < c->nparams; i++) {
            ptrdiff_t n = c->sizes[i], q;
            #pragma omp for schedule(static)
            for (q = 0; q < (n + 4095) / 4096; q++) {      /* blocks of a multiple of 8: the same paths as whole */
                ptrdiff_t o = 4096 * q, m = n - o < 4096 ? n - o : 4096;
                if (c->Vm)
                    CS_CELL(cs_adam)(F(c->P[i]) + o, F(c->D[i]) + o, F(c->M[i]) + o, F(c->Vm[i]) + o, m,
                                     (R)(i == 0 ? lr * c->input_lr : lr),
                                     (R)0.9, (R)0.999, (R)c1, (R)c2, (R)1e-8, (R)(5.0 * c->nlast));
                else
                    CS_ADAGRAD(F(c->P[i]) + o, F(c->D[i]) + o, F(c->M[i]) + o, m, lr);
            }
        }
    }
    c->stale = 1;
}

/* Every layer one step on the first Bn lanes, inputs c->xin, states (Bn, S) updated in place. */
static void CS_NAME(cs_lanes_advance)(cs_lanes *c, ptrdiff_t Bn, R *state)
{
    ptrdiff_t H = c->H, GH = c->GH, S = c->S, SC = c->SC, l, b;
    R *a = F(c->acts), *w = F(c->z), *hn = F(c->hn), *cn = F(c->cn), *X = F(c->aux);
    for (l = 0; l < c->L; l++) {
        const R *bl = F(c->b[l]);
        if (l == 0) {
            #pragma omp for schedule(static)
            for (b = 0; b < Bn; b++) {
                const R *wx = F(c->wx0T) + (ptrdiff_t)c->xin[b] * GH;
                for (ptrdiff_t g = 0; g < GH; g++)
                    a[b * GH + g] = wx[g] + bl[g];
            }
        } else {
            #pragma omp for schedule(static)
            for (b = 0; b < Bn; b++)
                memcpy(a + b * GH, bl, GH * sizeof(R));
            CS_NAME(cs_pgemm)(a, GH, state + (l - 1) * SC * H, S, 1, F(c->wT) + c->offx[l], GH,
                              F(c->wP) + c->opk[4 * l + 1], Bn, H, GH, 1);
        }
        CS_NAME(cs_pgemm)(w, GH, state + l * SC * H, S, 1, F(c->wT) + c->offh[l], GH, F(c->wP) + c->opk[4 * l],
                          Bn, H, GH, 0);
        #pragma omp for schedule(static)
        for (b = 0; b < Bn; b++) {
            R *h = state + b * S + l * SC * H;
            CS_CELL(cs_cell_forward)(c->cell, H, a + b * GH, w + b * GH, h, h + H, hn + b * H, cn + b * H, X + b * H);
            memcpy(h, hn + b * H, H * sizeof(R));
            if (c->cell == CS_LSTM)
                memcpy(h + H, cn + b * H, H * sizeof(R));
        }
    }
}

/* The first Bn lanes' logits (with the bias) into yd (Bn, V) doubles. */
static void CS_NAME(cs_lanes_logits)(cs_lanes *c, ptrdiff_t Bn, const R *state)
{
    ptrdiff_t V = c->V, Vp = c->Vp, b;
    R *ys = F(c->ys);
    #pragma omp for schedule(static)
    for (b = 0; b < Bn; b++)
        memcpy(ys + b * Vp, c->by, V * sizeof(R));
    CS_NAME(cs_pgemm)(ys, Vp, state + (c->L - 1) * c->SC * c->H, c->S, 1, F(c->wT) + c->offy, V,
                      F(c->wP) + c->opk[4 * c->L], Bn, c->H, V, 1);
    #pragma omp for schedule(static)
    for (b = 0; b < Bn; b++)
        for (ptrdiff_t v = 0; v < V; v++)
            c->yd[b * V + v] = (double)ys[b * Vp + v];
}

static void CS_NAME(cs_lanes_prepare_once)(cs_lanes *c)
{
    if (c->stale)                       /* the same on every thread: the flag changes after the barrier */
        CS_NAME(cs_lanes_prepare)(c);
    #pragma omp barrier
}

/* Equivalent to, on each of the first Bn lanes: `for t < n: h = step(xs[b, t], h)`, and with losses,
 * then `losses[b] += -log softmax(logits(h))[xs[b, t+1]]` (scoring xs[b, 1:n+1]: the rows hold n+1). */
static void CS_NAME(cs_lanes_run)(cs_lanes *c, ptrdiff_t Bn, const int *xs, ptrdiff_t ldx, ptrdiff_t n, R *state,
                                  double *losses)
{
    #pragma omp parallel num_threads(c->nt) if (c->nt > 1)
    {
        ptrdiff_t V = c->V, t, b;
        CS_NAME(cs_lanes_prepare_once)(c);
        for (t = 0; t < n; t++) {
            #pragma omp single
            for (b = 0; b < Bn; b++)
                c->xin[b] = xs[b * ldx + t];
            CS_NAME(cs_lanes_advance)(c, Bn, state);
            if (losses) {
                CS_NAME(cs_lanes_logits)(c, Bn, state);
                #pragma omp for schedule(static)
                for (b = 0; b < Bn; b++) {
                    double *y = c->yd + b * V, m = y[0], yk = y[xs[b * ldx + t + 1]];
                    for (ptrdiff_t v = 1; v < V; v++)
                        m = y[v] > m ? y[v] : m;
                    losses[b] += log(cs_exp_affine(y, V, m, 1.0)) + m - yk;
                }
            }
        }
    }
    c->stale = 0;
}

/* For each of the first Bn lanes and s < n: draw out[b, s] from softmax(logits * inv[b]) by inverse
 * CDF at u[b, s] (the argmax where greedy[b]; cut to top_k[b] first when 0 < top_k[b] < V), then
 * step the lane's state through it. */
static void CS_NAME(cs_lanes_sample)(cs_lanes *c, ptrdiff_t Bn, R *state, const double *u, ptrdiff_t ldu, int *out,
                                     ptrdiff_t ldo, ptrdiff_t n, const double *inv, const unsigned char *greedy,
                                     const ptrdiff_t *top_k)
{
    #pragma omp parallel num_threads(c->nt) if (c->nt > 1)
    {
        ptrdiff_t V = c->V, s, b;
        CS_NAME(cs_lanes_prepare_once)(c);
        for (s = 0; s < n; s++) {
            CS_NAME(cs_lanes_logits)(c, Bn, state);
            #pragma omp for schedule(static)
            for (b = 0; b < Bn; b++) {
                double *y = c->yd + b * V;
                ptrdiff_t k = greedy[b] ? cs_argmax(y, V)
                                        : cs_draw_logits(y, V, inv[b], u[b * ldu + s], top_k[b], c->scratch + b * V);
                out[b * ldo + s] = (int)k;
                c->xin[b] = (int)k;
            }
            CS_NAME(cs_lanes_advance)(c, Bn, state);
        }
    }
    c->stale = 0;
}

/* p = softmax(logits(lane 0) * inv). */
static void CS_NAME(cs_lanes_probs)(cs_lanes *c, const R *state, double *p, double inv)
{
    ptrdiff_t V = c->V, v;
    if (c->stale)
        CS_NAME(cs_lanes_prepare)(c);
    c->stale = 0;
    CS_NAME(cs_lanes_logits)(c, 1, state);
    double m = c->yd[0], s;
    for (v = 1; v < V; v++)
        m = c->yd[v] > m ? c->yd[v] : m;
    for (v = 0; v < V; v++)
        p[v] = c->yd[v];
    s = cs_exp_affine(p, V, m, inv);
    for (v = 0; v < V; v++)
        p[v] /= s;
}

#undef R
#undef F
#undef CS_PW
