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
#include "mathf.h"

#define CS_RNN 0
#define CS_GRU 1
#define CS_LSTM 2

/* The cells' step, backward and Adam over one floating type: ext/cell_ops.h, instantiated for
 * double (cs_cell_forward, ...) and float (cs_cell_forward_f, ...; tanh from ext/mathf.h). */
#define CS_REAL double
#define CS_NAME(x) x
#define CS_TANH cs_tanh
#include "cell_ops.h"
#undef CS_REAL
#undef CS_NAME
#undef CS_TANH
#define CS_REAL float
#define CS_NAME(x) x##_f
#define CS_TANH cs_tanh_f
#include "cell_ops.h"
#undef CS_REAL
#undef CS_NAME
#undef CS_TANH

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

#endif
