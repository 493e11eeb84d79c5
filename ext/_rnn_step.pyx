"""The kernels of charstream: Kernel (min-char-rnn's tanh RNN), CellKernel (GRU, LSTM, stacked layers) and LaneKernel (B lanes of any cell): steps, softmax, backward passes, optimizers, sampling."""
# Compiler directives (boundscheck, wraparound, cdivision, ...) are set once in setup.py, which builds
# this file once per instruction-set path through ext/_rnn_step_{avx512,avx2,baseline}.pyx.

from libc.math cimport log
from libc.string cimport memset, memcpy
from libc.stdint cimport uint64_t

import math

import numpy as np

cdef extern from "kernels.h" nogil:
    # the C parts, documented there: the register-blocked product; the panels that the recurrences,
    # sampling and scoring stream through; Adagrad; exp and tanh; the top-k cut and the draw
    void cs_gemm_acc(double* C, Py_ssize_t ldc, const double* A, Py_ssize_t ars, Py_ssize_t acs,
                     const double* B, Py_ssize_t ldb, Py_ssize_t M, Py_ssize_t K, Py_ssize_t N, int add)
    void cs_adagrad(double* p, const double* d, double* m, Py_ssize_t n, double lr)
    void cs_panel_matvec(const double* P, Py_ssize_t nb, Py_ssize_t n, const double* x, double* y, int rev)
    void cs_pack(const double* A, Py_ssize_t m, Py_ssize_t n, double* P, Py_ssize_t r0)
    void cs_pack_transposed(const double* A, Py_ssize_t n, double* P)
    void cs_transpose(const double* A, Py_ssize_t m, Py_ssize_t n, double* B)
    void cs_tanh(double* h, Py_ssize_t n)
    double cs_exp_affine(double* y, Py_ssize_t n, double m, double s)
    Py_ssize_t cs_draw(const double* w, Py_ssize_t V, double u)
    double cs_cut_top_k(double* w, Py_ssize_t V, Py_ssize_t k, double* s)
    void cs_exp_sub(double* y, const double* m, Py_ssize_t n)
    const bint CS_PANELS


cdef inline bint is_finite(double x) noexcept nogil:
    """Equivalent to `np.isfinite(x)`, by the exponent bits (immune to -ffast-math)."""
    cdef uint64_t bits
    memcpy(&bits, &x, 8)
    return (bits & 0x7ff0000000000000ULL) != 0x7ff0000000000000ULL


cdef inline void rows8(const double* A, Py_ssize_t n, const double* x, double* y) noexcept nogil:
    """Equivalent to `y[:8] = A[:8, :n] @ x[:n]`: eight independent reductions share each load of x,
    enough FMA chains in flight to hide the FMA latency."""
    cdef Py_ssize_t j
    cdef double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0, a4 = 0.0, a5 = 0.0, a6 = 0.0, a7 = 0.0
    for j in range(n):
        a0 += A[j] * x[j]
        a1 += A[n + j] * x[j]
        a2 += A[2 * n + j] * x[j]
        a3 += A[3 * n + j] * x[j]
        a4 += A[4 * n + j] * x[j]
        a5 += A[5 * n + j] * x[j]
        a6 += A[6 * n + j] * x[j]
        a7 += A[7 * n + j] * x[j]
    y[0] = a0
    y[1] = a1
    y[2] = a2
    y[3] = a3
    y[4] = a4
    y[5] = a5
    y[6] = a6
    y[7] = a7


cdef inline double row1(const double* A, Py_ssize_t n, const double* x) noexcept nogil:
    """Equivalent to `A[:n] @ x[:n]`."""
    cdef Py_ssize_t j
    cdef double a = 0.0
    for j in range(n):
        a += A[j] * x[j]
    return a


cdef inline void matvec(const double* A, Py_ssize_t m, Py_ssize_t n, const double* x, double* y,
                        bint rev) noexcept nogil:
    """Equivalent to `y[:m] = A[:m, :n] @ x[:n]` for C-contiguous A (m, n).

    `rev` walks the rows from the last: alternating directions, a matrix too big for L1 finds the
    rows it used last still there. Each y[i] comes out the same either way.
    """
    cdef Py_ssize_t i, m8 = m - m % 8
    if not rev:
        for i in range(0, m8, 8):
            rows8(A + i * n, n, x, y + i)
        for i in range(m8, m):
            y[i] = row1(A + i * n, n, x)
    else:
        i = m - 1
        while i >= m8:
            y[i] = row1(A + i * n, n, x)
            i -= 1
        i = m8 - 8
        while i >= 0:
            rows8(A + i * n, n, x, y + i)
            i -= 8


cdef inline void rows8_acc(const double* x, const double* A, Py_ssize_t n, double* y) noexcept nogil:
    """Equivalent to `y[:n] += x[:8] @ A[:8, :n]`: one load and store of y serves eight FMAs."""
    cdef Py_ssize_t j
    cdef double x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3], x4 = x[4], x5 = x[5], x6 = x[6], x7 = x[7]
    for j in range(n):
        y[j] = y[j] + (x0 * A[j] + x1 * A[n + j] + x2 * A[2 * n + j] + x3 * A[3 * n + j]
                       + x4 * A[4 * n + j] + x5 * A[5 * n + j] + x6 * A[6 * n + j] + x7 * A[7 * n + j])


cdef inline void vecmat(const double* x, const double* A, Py_ssize_t m, Py_ssize_t n, double* y,
                        bint rev) noexcept nogil:
    """Equivalent to `y[:n] = x[:m] @ A[:m, :n]` for C-contiguous A (m, n), eight rows per pass.

    `rev` takes the passes from the last row, as `matvec` does; the order of the passes (and so the
    rounding) is fixed by `rev`, never by alignment.
    """
    cdef Py_ssize_t i, j, m8 = m - m % 8
    memset(y, 0, n * sizeof(double))
    if not rev:
        for i in range(0, m8, 8):
            rows8_acc(x + i, A + i * n, n, y)
        for i in range(m8, m):
            for j in range(n):
                y[j] += x[i] * A[i * n + j]
    else:
        i = m - 1
        while i >= m8:
            for j in range(n):
                y[j] += x[i] * A[i * n + j]
            i -= 1
        i = m8 - 8
        while i >= 0:
            rows8_acc(x + i, A + i * n, n, y)
            i -= 8


cdef inline void tanh_step(const double* Wxh, const double* Whh, const double* bh,
                           Py_ssize_t H, Py_ssize_t V, int ix,
                           const double* hprev, double* h, bint rev) noexcept nogil:
    """Equivalent to `h[:] = np.tanh(Wxh[:, ix] + Whh @ hprev + bh)`; h and hprev must not alias."""
    matvec(Whh, H, H, hprev, h, rev)
    tanh_finish(h, Wxh + ix, V, bh, H, h)


cdef inline void tanh_finish(const double* z, const double* wx, Py_ssize_t stride, const double* bh,
                             Py_ssize_t H, double* h) noexcept nogil:
    """Equivalent to `h[:] = np.tanh(z[:H] + wx[::stride][:H] + bh)`, z holding `Whh @ hprev` (it may
    be h itself) and wx pointing at `Wxh[0, ix]` (stride V) or at row ix of Wxh transposed (stride 1)."""
    cdef Py_ssize_t i
    for i in range(H):
        h[i] = z[i] + wx[i * stride] + bh[i]
    cs_tanh(h, H)   # as expm1(2a) / (expm1(2a) + 2): a few ulp, small a included (ext/kernels.h)


cdef inline void logits(const double* Why, const double* by, Py_ssize_t V, Py_ssize_t H,
                        const double* h, double* y, bint rev) noexcept nogil:
    """Equivalent to `y[:] = Why @ h + by`."""
    cdef Py_ssize_t k
    matvec(Why, V, H, h, y, rev)
    for k in range(V):
        y[k] += by[k]


cdef inline double softmax(double* y, Py_ssize_t V) noexcept nogil:
    """Equivalent to `y[:] = np.exp(y - y.max()) / np.exp(y - y.max()).sum()`; returns log of the
    normaliser plus the max, so that `-log p[k] = returned - y_before[k]`."""
    cdef Py_ssize_t k
    cdef double m = y[0], s = 0.0, inv
    for k in range(1, V):
        if y[k] > m:
            m = y[k]
    s = cs_exp_affine(y, V, m, 1.0)
    inv = 1.0 / s
    for k in range(V):
        y[k] *= inv
    return log(s) + m


cdef inline double* _aligned(double* p) noexcept nogil:
    """p moved up to the next 64-byte boundary (at most 7 doubles): whole cache lines per panel row."""
    return p + (64 - <size_t>p % 64) % 64 // 8


cdef inline double add_bias_max(double* y, const double* by, Py_ssize_t V) noexcept nogil:
    """Equivalent to `y += by; return y.max()`."""
    cdef Py_ssize_t k
    cdef double m = y[0] + by[0]
    for k in range(V):
        y[k] += by[k]
        if y[k] > m:
            m = y[k]
    return m


cdef inline Py_ssize_t draw_logits(double* y, const double* by, Py_ssize_t V, double inv,
                                   double u, Py_ssize_t top_k, double* scratch) noexcept nogil:
    """Equivalent to `np.searchsorted(np.cumsum(w), u * w.sum(), side="right")` for
    w = np.exp((y + by - max(y + by)) * inv) (up to the rounding of the sums), cut to its top_k
    largest when 0 < top_k < V (cs_cut_top_k, scratch: V doubles); y is overwritten."""
    cdef double m = add_bias_max(y, by, V), s
    s = cs_exp_affine(y, V, m, inv)
    if 0 < top_k < V:
        s = cs_cut_top_k(y, V, top_k, scratch)
    return cs_draw(y, V, u * s)


cdef inline Py_ssize_t argmax_logits(const double* y, const double* by, Py_ssize_t V) noexcept nogil:
    """Equivalent to `np.argmax(y + by)`: the first index of the largest."""
    cdef Py_ssize_t k, best = 0
    cdef double m = y[0] + by[0], v
    for k in range(1, V):
        v = y[k] + by[k]
        if v > m:
            m = v
            best = k
    return best


cdef class Kernel:
    """Forward, backward, Adagrad and sampling over one model's parameter arrays, updated in place.

    Shapes: Wxh (H, V), Whh (H, H), Why (V, H), bh (H,), by (V,); the Adagrad memories match them.
    `T` is the longest chunk the kernel trains (seq_length).
    """
    cdef public Py_ssize_t H, V, T
    cdef double[:, ::1] Wxh, Whh, Why, mWxh, mWhh, mWhy
    cdef double[::1] bh, by, mbh, mby
    cdef double[:, ::1] dWxh, dWhh, dWhy
    cdef double[::1] dbh, dby
    cdef double[:, ::1] hs      # (T+1, H): hs[0] = hprev, hs[t+1] = h_t
    cdef Py_ssize_t Tp          # T rounded up to 32, the row stride of ys: whole register blocks
    cdef double[:, ::1] hsT     # (H, Tp+1): hs transposed, so that a chunk's logits are one product
    cdef double[:, ::1] ys      # (V, Tp): logits, then probabilities, then dy, one column per step
    cdef double[:, ::1] tbuf    # (3, T): per-step max, normaliser, target logit
    cdef double[:, ::1] dh      # (T, H): Why^T dy_t, then dhraw_t
    cdef double[::1] dhnext     # (Hp,): H rounded up to 8, the rows of whole panels
    cdef Py_ssize_t Hp
    cdef double[::1] hbuf       # (H,) scratch for sampling and scoring
    cdef double[::1] ybuf       # (V,) scratch for sampling and scoring
    cdef Py_ssize_t Mp          # H + V rounded up to 8
    cdef double[::1] panels     # [Whh[:h1]; Why; Whh[h1:]] packed in panels of 8 rows for sampling,
                                # [Whh; Why] for evaluate, Whh alone for the forward recurrence;
                                # zero padded, from its first 64-byte boundary on
    cdef double[::1] zbuf       # (Mp,) the panels' product with h
    cdef double[::1] bpanels    # Whh^T in panels of 8 rows (column blocks of Whh) for the backward
                                # recurrence, zero padded, from its first 64-byte boundary on
    cdef double[:, ::1] WxhT    # (V, H) Wxh transposed for sampling: a column in one stretch
    cdef int[::1] cols          # (T,): the distinct inputs of the last chunk, ascending: dWxh's only
    cdef Py_ssize_t ncols       # nonzero columns, the ones Adagrad updates when they are few
    cdef unsigned char[::1] seen   # (V,) scratch for finding them
    cdef public bint sparse     # update only those columns of Wxh (False: all of it; the same bits)
    cdef object _grads

    def __init__(self, params, mem=None, Py_ssize_t T=25, sparse=True):
        Wxh, Whh, Why, bh, by = (params[k] for k in ("Wxh", "Whh", "Why", "bh", "by"))
        H, V = np.shape(bh)[0], np.shape(by)[0]   # biases fix the sizes; matrices are checked against them
        _check(Wxh, "Wxh", (H, V))
        _check(Whh, "Whh", (H, H))
        _check(Why, "Why", (V, H))
        _check(bh, "bh", (H,))
        _check(by, "by", (V,))
        if V < 1:
            raise ValueError("the vocabulary is empty: train on some text first")
        if H < 1:
            raise ValueError(f"the hidden size must be at least 1, got {H}")
        if T < 1:
            raise ValueError(f"T must be at least 1, got {T}")
        self.H, self.V, self.T = H, V, T
        self.Wxh, self.Whh, self.Why, self.bh, self.by = Wxh, Whh, Why, bh, by
        if mem is not None:
            for k in ("Wxh", "Whh", "Why", "bh", "by"):
                _check(mem[k], "m" + k, params[k].shape)
            self.mWxh, self.mWhh, self.mWhy = mem["Wxh"], mem["Whh"], mem["Why"]
            self.mbh, self.mby = mem["bh"], mem["by"]
            self._grads = {k: np.zeros_like(params[k]) for k in ("Wxh", "Whh", "Why", "bh", "by")}
            self.dWxh, self.dWhh, self.dWhy = self._grads["Wxh"], self._grads["Whh"], self._grads["Why"]
            self.dbh, self.dby = self._grads["bh"], self._grads["by"]
        self.hs = np.zeros((T + 1, H))
        self.Tp = (T + 31) // 32 * 32
        self.hsT = np.zeros((H, self.Tp + 1))
        self.ys = np.zeros((V, self.Tp))
        self.tbuf = np.zeros((3, T))
        self.dh = np.zeros((T, H))
        self.Hp = (H + 7) // 8 * 8
        self.dhnext = np.zeros(self.Hp)
        self.hbuf = np.zeros(H)
        self.ybuf = np.zeros(V)
        self.Mp = (H + V + 7) // 8 * 8
        self.panels = np.zeros(self.Mp * H + 8)   # + 8: room to start on a 64-byte boundary
        self.zbuf = np.zeros(self.Mp)
        self.bpanels = np.zeros(self.Hp * H + 8 if mem is not None and CS_PANELS else 8)
        self.WxhT = np.zeros((V, H))
        self.cols = np.zeros(T, dtype=np.int32)
        self.ncols = -1                            # not known until a loss_and_grads: all of Wxh
        self.seen = np.zeros(V, dtype=np.uint8)
        self.sparse = sparse

    @property
    def grads(self):
        """The gradients of the last `loss_and_grads` call, keyed like the parameters."""
        return self._grads

    cdef double _forward_backward(self, const int* xs, Py_ssize_t n, double* hprev) noexcept nogil:
        """Equivalent to min-char-rnn's `lossFun(xs[:n], xs[1:n+1], hprev)`: fills the gradients,
        sets hprev to the last hidden state and returns the summed cross-entropy in nats.

        Only the two recurrences are matrix-vector work; the logits, dWhy, dh and dWhh of the
        whole chunk are matrix products (`cs_gemm_acc`, ext/kernels.h).
        """
        cdef Py_ssize_t H = self.H, V = self.V, T = self.Tp, t, i, k
        cdef Py_ssize_t L = T + 1                   # row stride of hsT
        cdef Py_ssize_t npad = (n + 15) // 16 * 16  # logits of steps n..npad-1 are computed, unused
        cdef const double* Wxh = &self.Wxh[0, 0]
        cdef const double* Whh = &self.Whh[0, 0]
        cdef const double* Why = &self.Why[0, 0]
        cdef const double* bh = &self.bh[0]
        cdef const double* by = &self.by[0]
        cdef double* dWxh = &self.dWxh[0, 0]
        cdef double* dWhh = &self.dWhh[0, 0]
        cdef double* dWhy = &self.dWhy[0, 0]
        cdef double* dbh = &self.dbh[0]
        cdef double* dby = &self.dby[0]
        cdef double* hs = &self.hs[0, 0]
        cdef double* hsT = &self.hsT[0, 0]
        cdef double* ys = &self.ys[0, 0]
        cdef double* mx = &self.tbuf[0, 0]
        cdef double* sm = &self.tbuf[1, 0]
        cdef double* lz = &self.tbuf[2, 0]
        cdef double* dh = &self.dh[0, 0]
        cdef double* dhnext = &self.dhnext[0]
        cdef double* z = &self.zbuf[0]
        cdef double* Pf = _aligned(&self.panels[0])
        cdef double* Pb = _aligned(&self.bpanels[0])
        cdef Py_ssize_t nb = self.Hp // 8
        cdef double loss = 0.0, g
        cdef double* y
        cdef double* d
        cdef const double* hrow

        memset(dWxh, 0, H * V * sizeof(double))
        memset(dbh, 0, H * sizeof(double))

        # forward: hs[t+1] = tanh(Wxh[:, x_t] + Whh hs[t] + bh), copied into column t+1 of hsT.
        # With vector registers Whh @ hs[t] goes through Whh packed in panels (one sequential stream,
        # no horizontal sums: 1.5x faster than row dot products, by TSC ticks); the sampling panels'
        # first H rows hold them (rows H.. of the last panel may hold what sample() packed there:
        # z[H:] is not used)
        memcpy(hs, hprev, H * sizeof(double))
        if CS_PANELS:
            cs_pack(Whh, H, H, Pf, 0)
            for t in range(n):
                cs_panel_matvec(Pf, nb, H, hs + t * H, z, t & 1)
                tanh_finish(z, Wxh + xs[t], V, bh, H, hs + (t + 1) * H)
        else:
            for t in range(n):
                tanh_step(Wxh, Whh, bh, H, V, xs[t], hs + t * H, hs + (t + 1) * H, t & 1)
        for t in range(n + 1):
            for i in range(H):
                hsT[i * L + t] = hs[t * H + i]

        # logits of the chunk: ys[:, :n] = by[:, None] + Why @ hsT[:, 1:n+1]          # (V, n)
        for k in range(V):
            y = ys + k * T
            for t in range(npad):
                y[t] = by[k]
        cs_gemm_acc(ys, T, Why, H, 1, hsT + 1, L, V, H, npad, 1)

        # softmax down each column; loss_t = log(sum exp(y - max)) + max - y[target]
        for t in range(n):
            mx[t] = ys[t]
            sm[t] = 0.0
            lz[t] = ys[xs[t + 1] * T + t]
        for k in range(1, V):
            y = ys + k * T
            for t in range(n):
                mx[t] = y[t] if y[t] > mx[t] else mx[t]
        for k in range(V):
            cs_exp_sub(ys + k * T, mx, n)
        for k in range(V):
            y = ys + k * T
            for t in range(n):
                sm[t] += y[t]
        for t in range(n):
            loss += log(sm[t]) + mx[t] - lz[t]
            sm[t] = 1.0 / sm[t]
        for k in range(V):
            y = ys + k * T
            for t in range(n):
                y[t] *= sm[t]
        for t in range(n):
            ys[xs[t + 1] * T + t] -= 1.0               # dy = p - onehot(target)

        # dWhy[k] = dy[k, :n] @ hs[1:n+1], dby[k] = sum_t dy[k, t]
        cs_gemm_acc(dWhy, H, ys, T, 1, hs + H, H, V, n, H, 0)
        for k in range(V):
            y = ys + k * T
            g = 0.0
            for t in range(n):
                g = g + y[t]
            dby[k] = g
        # dh = dY^T Why                                                            # (n, H)
        cs_gemm_acc(dh, H, ys, 1, T, Why, H, n, V, H, 0)

        # backward through time: dhraw_t = (1 - h_t^2) (dh_t + dhnext), dhnext = Whh^T dhraw_t
        memset(dhnext, 0, H * sizeof(double))
        if CS_PANELS:
            cs_pack_transposed(Whh, H, Pb)
        t = n - 1
        while t >= 0:
            d = dh + t * H
            hrow = hs + (t + 1) * H
            for i in range(H):
                d[i] = (1.0 - hrow[i] * hrow[i]) * (d[i] + dhnext[i])
            if t > 0 and CS_PANELS:
                cs_panel_matvec(Pb, nb, H, d, dhnext, t & 1)   # Whh^T d, panels as in the forward
            elif t > 0:
                vecmat(d, Whh, H, H, dhnext, t & 1)     # alternating directions, as the forward does
            t -= 1

        # dbh = sum_t dhraw_t, dWxh[:, x_t] += dhraw_t, dWhh[i] = dhraw[:n, i] @ hs[:n]
        for t in range(n):
            d = dh + t * H
            for i in range(H):
                dbh[i] += d[i]
                dWxh[i * V + xs[t]] += d[i]
        cs_gemm_acc(dWhh, H, dh, 1, H, hs, H, H, n, H, 0)
        self._find_columns(xs, n)

        memcpy(hprev, hs + n * H, H * sizeof(double))
        return loss

    cdef void _find_columns(self, const int* xs, Py_ssize_t n) noexcept nogil:
        """cols[:ncols] = np.unique(xs[:n]): the columns of Wxh that have a gradient."""
        cdef Py_ssize_t t, j, k = 0
        cdef int c
        for t in range(n):
            c = xs[t]
            if not self.seen[c]:
                self.seen[c] = 1
                j = k                                   # insertion sort: k <= T entries
                while j > 0 and self.cols[j - 1] > c:
                    self.cols[j] = self.cols[j - 1]
                    j -= 1
                self.cols[j] = c
                k += 1
        for j in range(k):
            self.seen[self.cols[j]] = 0
        self.ncols = k

    cdef void _adagrad_wxh(self, double lr) noexcept nogil:
        """Adagrad on Wxh. A zero gradient leaves an entry and its memory as they are (m += 0,
        p += -lr * 0 / ...), so when the chunk's columns are few only the 8-entry blocks holding them
        are updated (and the tail after the last whole block): the blocks the dense call runs, through
        the same code, so the bits are the dense update's."""
        cdef Py_ssize_t n = self.H * self.V, nv = n - n % 8, r, j, e, b, last = -1
        cdef double* p = &self.Wxh[0, 0]
        cdef double* d = &self.dWxh[0, 0]
        cdef double* m = &self.mWxh[0, 0]
        cdef bint tail = False
        if not self.sparse or self.ncols < 0 or self.ncols * 16 > self.V:
            cs_adagrad(p, d, m, n, lr)
            return
        for r in range(self.H):
            for j in range(self.ncols):
                e = r * self.V + self.cols[j]
                if e >= nv:
                    tail = True
                    continue
                b = e - e % 8
                if b != last:                          # ascending: a block shared by two columns runs once
                    cs_adagrad(p + b, d + b, m + b, 8, lr)
                    last = b
        if tail:
            cs_adagrad(p + nv, d + nv, m + nv, n - nv, lr)

    cdef void _adagrad(self, double lr) noexcept nogil:
        """Equivalent to, for each parameter: `g = np.clip(d, -5, 5); m += g * g;
        p += -lr * g / np.sqrt(m + 1e-8)`, the 1/sqrt to a few ulp (cs_rsqrt); Wxh only where the
        chunk's inputs give it a gradient (_adagrad_wxh)."""
        self._adagrad_wxh(lr)
        cs_adagrad(&self.Whh[0, 0], &self.dWhh[0, 0], &self.mWhh[0, 0], self.H * self.H, lr)
        cs_adagrad(&self.Why[0, 0], &self.dWhy[0, 0], &self.mWhy[0, 0], self.V * self.H, lr)
        cs_adagrad(&self.bh[0], &self.dbh[0], &self.mbh[0], self.H, lr)
        cs_adagrad(&self.by[0], &self.dby[0], &self.mby[0], self.V, lr)

    def loss_and_grads(self, const int[::1] xs, double[::1] hprev):
        """Forward and backward over inputs xs[:-1] and targets xs[1:]; fills `grads`, updates
        hprev in place to the last hidden state and returns the summed loss in nats."""
        cdef Py_ssize_t n = xs.shape[0] - 1
        self._check_chunk(xs, hprev, 0, n)
        with nogil:
            loss = self._forward_backward(&xs[0], n, &hprev[0])
        return loss

    def adagrad(self, double lr):
        """Clip the gradients of the last `loss_and_grads` to [-5, 5] and take one Adagrad step. With
        `sparse` (the default) dWxh must be zero outside the last chunk's inputs, as
        `loss_and_grads` leaves it; gradients written by hand before any chunk update all of Wxh."""
        self._need_mem()
        with nogil:
            self._adagrad(lr)

    def train_chunk(self, const int[::1] xs, Py_ssize_t s, double[::1] hprev, double lr):
        """`loss_and_grads(xs[s:s+T+1], hprev)` then `adagrad(lr)`, unless the loss is not finite,
        in which case nothing is updated (hprev included). Returns the chunk's loss in nats."""
        cdef Py_ssize_t n = self.T
        cdef double loss
        self._check_chunk(xs, hprev, s, n)
        with nogil:
            memcpy(&self.hbuf[0], &hprev[0], self.H * sizeof(double))
            loss = self._forward_backward(&xs[s], n, &self.hbuf[0])
            if is_finite(loss):
                self._adagrad(lr)
                memcpy(&hprev[0], &self.hbuf[0], self.H * sizeof(double))
        return loss

    def evaluate(self, const int[::1] xs, double[::1] h):
        """Equivalent to summing `-log softmax(Why h_t + by)[xs[t+1]]` over t, stepping h through
        xs[:-1] from the given state (updated in place); no gradients, no update."""
        cdef Py_ssize_t n = xs.shape[0] - 1, t, i, k, H = self.H, V = self.V
        cdef double loss = 0.0, lz, m
        cdef double* y = &self.ybuf[0]
        if h.shape[0] != H:
            raise ValueError(f"h must be ({H},), got ({h.shape[0]},)")
        _check_finite(h, "h")
        self._check_indices(xs, 0, xs.shape[0])
        cdef double* z = &self.zbuf[0]
        cdef double* P = _aligned(&self.panels[0])
        cdef double* WxhT = &self.WxhT[0, 0]
        cdef const double* by = &self.by[0]
        cdef const double* bh = &self.bh[0]
        cdef const double* wx
        cdef Py_ssize_t nbp = self.Mp // 8
        with nogil:
            if CS_PANELS and n > 0:
                # as sampling does: one pass over the panels of [Whh; Why] per step gives the logits
                # of h_t and Whh @ h_t for h_{t+1}
                cs_pack(&self.Whh[0, 0], H, H, P, 0)
                cs_pack(&self.Why[0, 0], V, H, P, H)
                self._transpose_wxh()
                cs_panel_matvec(P, nbp, H, &h[0], z, 0)      # z[:H] = Whh @ h
                for t in range(n):
                    wx = WxhT + xs[t] * H
                    for i in range(H):
                        h[i] = z[i] + wx[i] + bh[i]
                    cs_tanh(&h[0], H)
                    cs_panel_matvec(P, nbp, H, &h[0], z, (t + 1) & 1)
                    y = z + H                                    # Why @ h
                    m = add_bias_max(y, by, V)
                    lz = y[xs[t + 1]]
                    loss += log(cs_exp_affine(y, V, m, 1.0)) + m - lz
            else:
                for t in range(n):
                    tanh_step(&self.Wxh[0, 0], &self.Whh[0, 0], &self.bh[0], H, V, xs[t], &h[0], &self.hbuf[0], 0)
                    memcpy(&h[0], &self.hbuf[0], H * sizeof(double))
                    logits(&self.Why[0, 0], &self.by[0], V, H, &h[0], y, 1)
                    lz = y[xs[t + 1]]
                    loss += softmax(y, V) - lz
        return loss

    def step(self, const int[::1] xs, double[::1] h):
        """Equivalent to `for x in xs: h[:] = np.tanh(Wxh[:, x] + Whh @ h + bh)`."""
        cdef Py_ssize_t t, H = self.H
        if h.shape[0] != H:
            raise ValueError(f"h must be ({H},), got ({h.shape[0]},)")
        _check_finite(h, "h")
        self._check_indices(xs, 0, xs.shape[0])
        with nogil:
            for t in range(xs.shape[0]):
                tanh_step(&self.Wxh[0, 0], &self.Whh[0, 0], &self.bh[0], H, self.V, xs[t], &h[0], &self.hbuf[0], t & 1)
                memcpy(&h[0], &self.hbuf[0], H * sizeof(double))

    def probs(self, const double[::1] h, double[::1] p, double temperature=1.0):
        """Equivalent to `p[:] = softmax((Why @ h + by) / temperature)`."""
        if h.shape[0] != self.H or p.shape[0] != self.V:
            raise ValueError(f"h must be ({self.H},) and p ({self.V},), got ({h.shape[0]},), ({p.shape[0]},)")
        _check_finite(h, "h")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        cdef Py_ssize_t k
        cdef double inv = 1.0 / temperature
        with nogil:
            logits(&self.Why[0, 0], &self.by[0], self.V, self.H, &h[0], &p[0], 0)
            for k in range(self.V):
                p[k] *= inv
            softmax(&p[0], self.V)

    def sample(self, double[::1] h, const double[::1] u, int[::1] out, double temperature=1.0,
               bint greedy=False, Py_ssize_t top_k=0):
        """For each n: draw out[n] from `softmax((Why @ h + by) / temperature)` by inverse CDF at
        u[n] in [0, 1), then step h through it. h is updated in place. `top_k` (when 0 < top_k < V)
        cuts the distribution to its top_k most probable first, as `samplers.cut_top_k` does. With
        `greedy`, out[n] is instead `np.argmax(Why @ h + by)` (the first on ties) and u is not read."""
        cdef Py_ssize_t n, k, H = self.H, V = self.V
        cdef double inv
        cdef double* y
        if h.shape[0] != H:
            raise ValueError(f"h must be ({H},), got ({h.shape[0]},)")
        _check_finite(h, "h")
        if u.shape[0] < out.shape[0]:
            raise ValueError(f"need {out.shape[0]} uniforms, got {u.shape[0]}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        inv = 1.0 / temperature
        cdef double* z = &self.zbuf[0]
        cdef double* P = _aligned(&self.panels[0])
        cdef double* WxhT = &self.WxhT[0, 0]
        cdef double* scratch = &self.ybuf[0]
        # The panels hold [Whh[:h1]; Why; Whh[h1:]]: a character's pass takes the panels up to the
        # last (first, in reverse) row of Why, draws, then the remaining panels of Whh, which do not
        # depend on the draw: the core streams them while the draw's chain of max, exp, sums and
        # compares waits on itself (cs_draw has no branch to mispredict and flush them). Without
        # panels, h1 = H: [Whh; Why] as two row-wise products.
        cdef Py_ssize_t h1 = (H // 2) // 8 * 8 if CS_PANELS else H
        cdef Py_ssize_t nbp = self.Mp // 8, pf = h1 // 8, pw = (h1 + V - 1) // 8
        cdef const double* by = &self.by[0]
        cdef const double* bh = &self.bh[0]
        cdef const double* wx
        cdef Py_ssize_t i
        y = z + h1
        with nogil:
            if CS_PANELS:
                cs_pack(&self.Whh[0, 0], h1, H, P, 0)
                cs_pack(&self.Why[0, 0], V, H, P, h1)
                cs_pack(&self.Whh[0, 0] + h1 * H, H - h1, H, P, h1 + V)
            self._transpose_wxh()
            for n in range(out.shape[0]):
                # z = [Whh; Why] @ h in the panels' row order, alternating direction
                if not CS_PANELS:
                    matvec(&self.Whh[0, 0], H, H, &h[0], z, n & 1)
                    matvec(&self.Why[0, 0], V, H, &h[0], y, n & 1)
                    k = argmax_logits(y, by, V) if greedy else draw_logits(y, by, V, inv, u[n], top_k, scratch)
                elif n & 1:
                    cs_panel_matvec(P + pf * H * 8, nbp - pf, H, &h[0], z + 8 * pf, 1)
                    k = argmax_logits(y, by, V) if greedy else draw_logits(y, by, V, inv, u[n], top_k, scratch)
                    cs_panel_matvec(P, pf, H, &h[0], z, 1)
                else:
                    cs_panel_matvec(P, pw + 1, H, &h[0], z, 0)
                    k = argmax_logits(y, by, V) if greedy else draw_logits(y, by, V, inv, u[n], top_k, scratch)
                    cs_panel_matvec(P + (pw + 1) * H * 8, nbp - pw - 1, H, &h[0], z + 8 * (pw + 1), 0)
                out[n] = <int>k
                # h = tanh(Whh @ h + Wxh[:, k] + bh), the rows h1.. of Whh @ h V further on in z
                wx = WxhT + k * H
                for i in range(h1):
                    h[i] = z[i] + wx[i] + bh[i]
                for i in range(h1, H):
                    h[i] = z[i + V] + wx[i] + bh[i]
                cs_tanh(&h[0], H)

    cdef void _transpose_wxh(self) noexcept nogil:
        """WxhT[:] = Wxh.T: a column of Wxh is H cache lines apart, a row of WxhT one stretch."""
        cs_transpose(&self.Wxh[0, 0], self.H, self.V, &self.WxhT[0, 0])

    cdef _need_mem(self):
        if self.mWxh is None:
            raise ValueError("this kernel was built without Adagrad memories: it cannot train")

    cdef _check_indices(self, const int[::1] xs, Py_ssize_t start, Py_ssize_t stop):
        cdef Py_ssize_t t
        cdef int V = <int>self.V
        for t in range(start, stop):
            if xs[t] < 0 or xs[t] >= V:
                raise ValueError(f"index {xs[t]} at position {t} is outside the vocabulary (V={V})")

    cdef _check_chunk(self, const int[::1] xs, double[::1] hprev, Py_ssize_t s, Py_ssize_t n):
        self._need_mem()
        if n < 1 or n > self.T:
            raise ValueError(f"a chunk has 1 to {self.T} inputs, got {n}")
        if s < 0 or s + n + 1 > xs.shape[0]:
            raise ValueError(f"chunk [{s}, {s + n + 1}) is outside xs of length {xs.shape[0]}")
        if hprev.shape[0] != self.H:
            raise ValueError(f"hprev must be ({self.H},), got ({hprev.shape[0]},)")
        _check_finite(hprev, "hprev")
        self._check_indices(xs, s, s + n + 1)


def _check(a, name, shape, dtype=np.float64):
    """Raise ValueError unless `a` is a C-contiguous writeable ndarray of the given shape and dtype."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must be {tuple(shape)}, got {a.shape}")
    if a.dtype != dtype:
        raise ValueError(f"{name} must be {np.dtype(dtype).name}, got {a.dtype}")
    if not a.flags.c_contiguous or not a.flags.writeable:
        raise ValueError(f"{name} must be C-contiguous and writeable")


include "cells.pxi"
include "lanes.pxi"
