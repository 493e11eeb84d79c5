/* The cells' own C: each cell's step and its backward, in one place, and the optimizers beyond
 * Adagrad; ext/cells.pxi drives them over a chunk, docs/cells.md explains the layout.
 *
 * Gate order is PyTorch's: the G*H rows of a layer's Wxh, Whh and bh are the gate blocks
 *   rnn  (G=1): h = tanh(a + w)
 *   gru  (G=3): r, z, n:  r = sigma(a_r + w_r), z = sigma(a_z + w_z), n = tanh(a_n + r * w_n),
 *               h = (1 - z) * n + z * hprev
 *   lstm (G=4): i, f, g, o: i, f, o = sigma(a + w), g = tanh(a_g + w_g), c = f * cprev + i * g,
 *               h = o * tanh(c)
 * where a = Wxh x + bh (the input side, a whole chunk at a time) and w = Whh hprev (the recurrence).
 * The GRU's one bias sits on the input side of n (PyTorch's b_hn is absent).
 */
#ifndef CHARSTREAM_CELLS_H
#define CHARSTREAM_CELLS_H

#include "kernels.h"

#define CS_RNN 0
#define CS_GRU 1
#define CS_LSTM 2

/* Equivalent to `a[:n] = 1 / (1 + np.exp(-a[:n]))`, as 0.5 + 0.5 tanh(a / 2) (cs_tanh: a few ulp). */
static inline void cs_sigmoid(double *a, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        a[i] *= 0.5;
    cs_tanh(a, n);
    for (ptrdiff_t i = 0; i < n; i++)
        a[i] = 0.5 + 0.5 * a[i];
}

/* One step of one layer. In: a (G*H) = Wxh x + bh, w (G*H) = Whh hprev, hp, cp the previous state.
 * Out: a holds the activated gates (rnn: h), h and c the new state (not aliasing hp, cp), aux (H) what
 * the backward needs besides: the GRU's w_n, the LSTM's tanh(c). c, cp are read by the LSTM only. */
static inline void cs_cell_forward(int cell, ptrdiff_t H, double *a, const double *w, const double *hp,
                                   const double *cp, double *h, double *c, double *aux)
{
    ptrdiff_t i;
    if (cell == CS_RNN) {
        for (i = 0; i < H; i++)
            h[i] = a[i] + w[i];
        cs_tanh(h, H);
        memcpy(a, h, H * sizeof(double));
    } else if (cell == CS_GRU) {
        double *r = a, *z = a + H, *n = a + 2 * H;
        for (i = 0; i < 2 * H; i++)
            a[i] += w[i];
        cs_sigmoid(a, 2 * H);
        for (i = 0; i < H; i++) {
            aux[i] = w[2 * H + i];
            n[i] += r[i] * aux[i];
        }
        cs_tanh(n, H);
        for (i = 0; i < H; i++)
            h[i] = (1.0 - z[i]) * n[i] + z[i] * hp[i];
    } else {
        double *ig = a, *fg = a + H, *gg = a + 2 * H, *og = a + 3 * H;
        for (i = 0; i < 4 * H; i++)
            a[i] += w[i];
        cs_sigmoid(a, 2 * H);
        cs_tanh(gg, H);
        cs_sigmoid(og, H);
        for (i = 0; i < H; i++) {
            c[i] = fg[i] * cp[i] + ig[i] * gg[i];
            aux[i] = c[i];
        }
        cs_tanh(aux, H);
        for (i = 0; i < H; i++)
            h[i] = og[i] * aux[i];
    }
}

/* The backward of cs_cell_forward. In: dh (H) dL/dh of this step (all of it), dc (H, LSTM) dL/dc from
 * the next step; the forward's gates a, aux, new h and previous hp, cp. Out: da (G*H) dL/da, dw (G*H)
 * dL/dw (the same as da but for the GRU's n block; dw may be da for the others), dc (LSTM) dL/dcprev,
 * and dhp (H) the part of dL/dhprev that does not go through Whh (the GRU's z * dh; else 0). */
static inline void cs_cell_backward(int cell, ptrdiff_t H, const double *dh, double *dc, const double *a,
                                    const double *aux, const double *h, const double *hp, const double *cp,
                                    double *da, double *dw, double *dhp)
{
    ptrdiff_t i;
    if (cell == CS_RNN) {
        for (i = 0; i < H; i++) {
            da[i] = (1.0 - h[i] * h[i]) * dh[i];
            dhp[i] = 0.0;
        }
    } else if (cell == CS_GRU) {
        const double *r = a, *z = a + H, *n = a + 2 * H;
        for (i = 0; i < H; i++) {
            double dn = dh[i] * (1.0 - z[i]) * (1.0 - n[i] * n[i]);
            double dr = dn * aux[i] * r[i] * (1.0 - r[i]);
            double dz = dh[i] * (hp[i] - n[i]) * z[i] * (1.0 - z[i]);
            da[i] = dr;
            da[H + i] = dz;
            da[2 * H + i] = dn;
            dw[i] = dr;
            dw[H + i] = dz;
            dw[2 * H + i] = dn * r[i];
            dhp[i] = dh[i] * z[i];
        }
    } else {
        const double *ig = a, *fg = a + H, *gg = a + 2 * H, *og = a + 3 * H;
        for (i = 0; i < H; i++) {
            double tc = aux[i];
            double dct = dc[i] + dh[i] * og[i] * (1.0 - tc * tc);
            da[i] = dct * gg[i] * ig[i] * (1.0 - ig[i]);
            da[H + i] = dct * cp[i] * fg[i] * (1.0 - fg[i]);
            da[2 * H + i] = dct * ig[i] * (1.0 - gg[i] * gg[i]);
            da[3 * H + i] = dh[i] * tc * og[i] * (1.0 - og[i]);
            dc[i] = dct * fg[i];
            dhp[i] = 0.0;
        }
    }
}

/* Pack A^T for cs_panel_matvec, A (m, n): panel b, row r, column j is A[j, 8b + r] (rows past n in
 * the last panel are left as they are: the caller zeroes them once). */
static inline void cs_pack_t(const double *A, ptrdiff_t m, ptrdiff_t n, double *P)
{
    for (ptrdiff_t j = 0; j < m; j++) {
        const double *a = A + j * n;
        for (ptrdiff_t k = 0; k < n; k++)
            P[(k / 8) * m * 8 + 8 * j + k % 8] = a[k];
    }
}

/* Adam on n entries, the gradient clipped first: `g = clip(d, -5, 5); m = b1 m + (1 - b1) g;
 * v = b2 v + (1 - b2) g^2; p -= lr * (m * c1) / (sqrt(v * c2) + eps)` with c1 = 1 / (1 - b1^t),
 * c2 = 1 / (1 - b2^t) for step t (the bias corrections). */
static inline void cs_adam(double *p, const double *d, double *m, double *v, ptrdiff_t n, double lr,
                           double b1, double b2, double c1, double c2, double eps)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        double g = d[i];
        g = g > 5.0 ? 5.0 : g;
        g = g < -5.0 ? -5.0 : g;
        m[i] = b1 * m[i] + (1.0 - b1) * g;
        v[i] = b2 * v[i] + (1.0 - b2) * (g * g);
        p[i] -= lr * (m[i] * c1) / (sqrt(v[i] * c2) + eps);
    }
}

#endif
