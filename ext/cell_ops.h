/* The cells' step and its backward, and Adam, over one floating type: a template, included by
 * ext/cells.h once per type with CS_REAL (double, float), CS_NAME (names: cs_cell_forward for double,
 * cs_cell_forward_f for float) and CS_TANH (the type's tanh over an array). No include guard, on
 * purpose; ext/cells.h has the gate order and formulas. */
#undef CS_SQRT
#define CS_SQRT(x) ((CS_REAL)sqrt(x))

/* Equivalent to `a[:n] = 1 / (1 + np.exp(-a[:n]))`, as 0.5 + 0.5 tanh(a / 2). */
static inline void CS_NAME(cs_sigmoid)(CS_REAL *a, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        a[i] *= (CS_REAL)0.5;
    CS_TANH(a, n);
    for (ptrdiff_t i = 0; i < n; i++)
        a[i] = (CS_REAL)0.5 + (CS_REAL)0.5 * a[i];
}

/* One step of one layer. In: a (G*H) = Wxh x + bh, w (G*H) = Whh hprev, hp, cp the previous state.
 * Out: a holds the activated gates (rnn: h), h and c the new state (not aliasing hp, cp), aux (H) what
 * the backward needs besides: the GRU's w_n, the LSTM's tanh(c). c, cp are read by the LSTM only. */
static inline void CS_NAME(cs_cell_forward)(int cell, ptrdiff_t H, CS_REAL *a, const CS_REAL *w, const CS_REAL *hp,
                                   const CS_REAL *cp, CS_REAL *h, CS_REAL *c, CS_REAL *aux)
{
    ptrdiff_t i;
    if (cell == CS_RNN) {
        for (i = 0; i < H; i++)
            h[i] = a[i] + w[i];
        CS_TANH(h, H);
        memcpy(a, h, H * sizeof(CS_REAL));
    } else if (cell == CS_GRU) {
        CS_REAL *r = a, *z = a + H, *n = a + 2 * H;
        for (i = 0; i < 2 * H; i++)
            a[i] += w[i];
        CS_NAME(cs_sigmoid)(a, 2 * H);
        for (i = 0; i < H; i++) {
            aux[i] = w[2 * H + i];
            n[i] += r[i] * aux[i];
        }
        CS_TANH(n, H);
        for (i = 0; i < H; i++)
            h[i] = ((CS_REAL)1.0 - z[i]) * n[i] + z[i] * hp[i];
    } else {
        CS_REAL *ig = a, *fg = a + H, *gg = a + 2 * H, *og = a + 3 * H;
        for (i = 0; i < 4 * H; i++)
            a[i] += w[i];
        CS_NAME(cs_sigmoid)(a, 2 * H);
        CS_TANH(gg, H);
        CS_NAME(cs_sigmoid)(og, H);
        for (i = 0; i < H; i++) {
            c[i] = fg[i] * cp[i] + ig[i] * gg[i];
            aux[i] = c[i];
        }
        CS_TANH(aux, H);
        for (i = 0; i < H; i++)
            h[i] = og[i] * aux[i];
    }
}

/* The backward of cs_cell_forward. In: dh (H) dL/dh of this step (all of it), dc (H, LSTM) dL/dc from
 * the next step; the forward's gates a, aux, new h and previous hp, cp. Out: da (G*H) dL/da, dw (G*H)
 * dL/dw (the same as da but for the GRU's n block; dw may be da for the others), dc (LSTM) dL/dcprev,
 * and dhp (H) the part of dL/dhprev that does not go through Whh (the GRU's z * dh; else 0). */
static inline void CS_NAME(cs_cell_backward)(int cell, ptrdiff_t H, const CS_REAL *dh, CS_REAL *dc, const CS_REAL *a,
                                    const CS_REAL *aux, const CS_REAL *h, const CS_REAL *hp, const CS_REAL *cp,
                                    CS_REAL *da, CS_REAL *dw, CS_REAL *dhp)
{
    ptrdiff_t i;
    if (cell == CS_RNN) {
        for (i = 0; i < H; i++) {
            da[i] = ((CS_REAL)1.0 - h[i] * h[i]) * dh[i];
            dhp[i] = 0.0;
        }
    } else if (cell == CS_GRU) {
        const CS_REAL *r = a, *z = a + H, *n = a + 2 * H;
        for (i = 0; i < H; i++) {
            CS_REAL dn = dh[i] * ((CS_REAL)1.0 - z[i]) * ((CS_REAL)1.0 - n[i] * n[i]);
            CS_REAL dr = dn * aux[i] * r[i] * ((CS_REAL)1.0 - r[i]);
            CS_REAL dz = dh[i] * (hp[i] - n[i]) * z[i] * ((CS_REAL)1.0 - z[i]);
            da[i] = dr;
            da[H + i] = dz;
            da[2 * H + i] = dn;
            dw[i] = dr;
            dw[H + i] = dz;
            dw[2 * H + i] = dn * r[i];
            dhp[i] = dh[i] * z[i];
        }
    } else {
        const CS_REAL *ig = a, *fg = a + H, *gg = a + 2 * H, *og = a + 3 * H;
        for (i = 0; i < H; i++) {
            CS_REAL tc = aux[i];
            CS_REAL dct = dc[i] + dh[i] * og[i] * ((CS_REAL)1.0 - tc * tc);
            da[i] = dct * gg[i] * ig[i] * ((CS_REAL)1.0 - ig[i]);
            da[H + i] = dct * cp[i] * fg[i] * ((CS_REAL)1.0 - fg[i]);
            da[2 * H + i] = dct * ig[i] * ((CS_REAL)1.0 - gg[i] * gg[i]);
            da[3 * H + i] = dh[i] * tc * og[i] * ((CS_REAL)1.0 - og[i]);
            dc[i] = dct * fg[i];
            dhp[i] = 0.0;
        }
    }
}

/* Adam on n entries, the gradient clipped first: `g = clip(d, -clip, clip); m = b1 m + (1 - b1) g;
 * v = b2 v + (1 - b2) g^2 (0 once below 1e-30); p -= lr * (m * c1) / (sqrt(v * c2) + eps)` with c1 = 1 / (1 - b1^t),
 * c2 = 1 / (1 - b2^t) for step t (the bias corrections). */
static inline void CS_NAME(cs_adam)(CS_REAL *p, const CS_REAL *d, CS_REAL *m, CS_REAL *v, ptrdiff_t n, CS_REAL lr,
                           CS_REAL b1, CS_REAL b2, CS_REAL c1, CS_REAL c2, CS_REAL eps, CS_REAL clip)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        CS_REAL g = d[i];
        g = g > clip ? clip : g;
        g = g < -clip ? -clip : g;
        m[i] = b1 * m[i] + ((CS_REAL)1.0 - b1) * g;
        v[i] = b2 * v[i] + ((CS_REAL)1.0 - b2) * (g * g);
        v[i] = v[i] < (CS_REAL)1e-30 ? (CS_REAL)0.0 : v[i];   /* a fading moment goes to exact zero, never
            denormal: -ffast-math's sqrt (x * rsqrt(x)) made NaN of a float32 v near 1e-38 */
        p[i] -= lr * (m[i] * c1) / (CS_SQRT(v[i] * c2) + eps);
    }
}

