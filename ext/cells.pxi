# CellKernel: layers of rnn, gru or lstm cells under the shared softmax head (included by _rnn_step.pyx;
# each cell's step and backward are in ext/cells.h, the design in docs/cells.md).

from libc.stdlib cimport malloc, free
from libc.math cimport pow

cdef extern from "cells.h" nogil:
    void cs_cell_forward(int cell, Py_ssize_t H, double* a, const double* w, const double* hp,
                         const double* cp, double* h, double* c, double* aux)
    void cs_cell_backward(int cell, Py_ssize_t H, const double* dh, double* dc, const double* a,
                          const double* aux, const double* h, const double* hp, const double* cp,
                          double* da, double* dw, double* dhp)
    void cs_pack_t(const double* A, Py_ssize_t m, Py_ssize_t n, double* P)
    void cs_adam(double* p, const double* d, double* m, double* v, Py_ssize_t n, double lr,
                 double b1, double b2, double c1, double c2, double eps, double clip)
    const int CS_RNN, CS_GRU, CS_LSTM

cdef double ADAM_BETA1 = 0.9, ADAM_BETA2 = 0.999, ADAM_EPS = 1e-8   # the usual betas and epsilon
# Adam clips each gradient entry to 5 per character of the chunk it sums over (clip(d, -5 n, 5 n)):
# PyTorch's recipe clipped elementwise at 5 on the sum lost 0.24 nats/char in 60 s (benchmarks/torch_recipe.py
# --clip-value 5); Adagrad keeps min-char-rnn's [-5, 5].
cdef double ADAM_CLIP_PER_CHAR = 5.0


cdef inline double head_loss(const int* xs, Py_ssize_t n, Py_ssize_t V, Py_ssize_t H, Py_ssize_t T,
                             const double* Why, const double* by, const double* hs, double* hsT,
                             double* ys, double* tbuf, double* dWhy, double* dby, double* dh) noexcept nogil:
    """The softmax head over a chunk: equivalent to, with Hs = hs[1:n+1] (n, H) and Y the one-hot
    targets xs[1:n+1], `P = softmax(Hs @ Why.T + by); loss = -log(P[Y]).sum(); dY = P - Y;
    dWhy = dY.T @ Hs; dby = dY.sum(0); dh = dY @ Why`. hsT (H, T+1) and ys (V, T), T a multiple of
    32, are scratch; tbuf holds 3 rows of n. Returns the loss in nats."""
    cdef Py_ssize_t t, i, k, L = T + 1, npad = (n + 15) // 16 * 16
    cdef double* mx = tbuf
    cdef double* sm = tbuf + n
    cdef double* lz = tbuf + 2 * n
    cdef double loss = 0.0, g
    cdef double* y
    for t in range(n + 1):
        for i in range(H):
            hsT[i * L + t] = hs[t * H + i]
    for k in range(V):
        y = ys + k * T
        for t in range(npad):
            y[t] = by[k]
    cs_gemm_acc(ys, T, Why, H, 1, hsT + 1, L, V, H, npad, 1)
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
        ys[xs[t + 1] * T + t] -= 1.0
    cs_gemm_acc(dWhy, H, ys, T, 1, hs + H, H, V, n, H, 0)
    for k in range(V):
        y = ys + k * T
        g = 0.0
        for t in range(n):
            g = g + y[t]
        dby[k] = g
    cs_gemm_acc(dh, H, ys, 1, T, Why, H, n, V, H, 0)
    return loss


cdef inline void panel_or_rows(const double* P, const double* A, Py_ssize_t m, Py_ssize_t n,
                               const double* x, double* y, bint rev) noexcept nogil:
    """Equivalent to `y[:m] = A[:m, :n] @ x`: through A's panels P where there are vector registers
    (y then needs room for m rounded up to 8), else row by row."""
    if CS_PANELS:
        cs_panel_matvec(P, (m + 7) // 8, n, x, y, rev)
    else:
        matvec(A, m, n, x, y, rev)


cdef double** _pointers(list arrays) except NULL:
    """A malloc'd array of the arrays' data pointers (C-contiguous float64, kept alive by the caller)."""
    cdef double** p = <double**>malloc((len(arrays) + 1) * sizeof(double*))
    cdef double[::1] flat
    if p == NULL:
        raise MemoryError()
    for i, a in enumerate(arrays):
        flat = a.reshape(-1)
        p[i] = &flat[0]
    return p


cdef class CellKernel:
    """Forward, backward, optimizer and sampling for `layers` layers of one cell, updated in place.

    The same methods as Kernel, with h / hprev the flat state of `charstream.cells.state_size` floats
    (per layer h, then c for the LSTM). Shapes and names come from `charstream.cells.params`; the
    optimizer's memories (`mem`, and for Adam `moments` and the one-element int64 step count `steps`)
    are shaped like the parameters. `T` is the longest chunk the kernel trains (seq_length).
    """
    cdef public Py_ssize_t H, V, T, L, G
    cdef public str cell, optimizer
    cdef public double input_lr     # Adam's step for Wxh (layer 0) is input_lr * lr; Adagrad ignores it
    cdef int code
    cdef Py_ssize_t GH, GHp, Hp, Tp, S, Vp, nparams
    cdef Py_ssize_t nlast       # the steps the last gradients sum over (Adam's clip is 5 per step)
    cdef object _keep, _grads   # _keep: every array a pointer below points into, itself (not the dicts)
    cdef double** Wx
    cdef double** Wh
    cdef double** b
    cdef double** dWx
    cdef double** dWh
    cdef double** db
    cdef double** P        # every parameter, gradient, memory and Adam moment, in table order
    cdef double** D
    cdef double** M
    cdef double** Vm
    cdef Py_ssize_t* sizes
    cdef double* Why
    cdef double* by
    cdef double* dWhy
    cdef double* dby
    cdef long long[::1] steps
    cdef double[:, :, ::1] hs    # (L, T+1, H): hs[l, 0] the layer's state before the chunk, hs[l, t+1] h_t
    cdef double[:, :, ::1] cs    # (L, T+1, H) for the LSTM's c (else one unused layer)
    cdef double[:, :, ::1] acts  # (L, T, G*H): input side Wxh x + bh, then the activated gates
    cdef double[:, :, ::1] aux   # (L, T, H): what the backward needs besides (cs_cell_forward)
    cdef double[:, :, ::1] da    # (L, T, G*H): dL/d(Wxh x + bh)
    cdef double[:, :, ::1] dw    # (L, T, G*H): dL/d(Whh hprev), the GRU's own (else unused)
    cdef double[:, :, ::1] dhx   # (L, T, H): dL/dh_t from above (the head, or the next layer)
    cdef double[:, ::1] hsT      # (H, Tp+1) the top layer's states transposed, for the head
    cdef double[:, ::1] ys       # (V, Tp) logits, probabilities, dy
    cdef double[::1] tbuf        # (3T,) per-step max, normaliser, target logit
    cdef double[:, ::1] wxT      # (H, G*H) a layer's Wxh transposed: its input side is one product
    cdef double[::1] pf          # Whh of one layer in panels (forward recurrence)
    cdef double[::1] pb          # Whh^T of one layer in panels (backward recurrence)
    cdef double[::1] zbuf, dhnext, dhp, dcn, hbuf
    cdef double[::1] ipan        # sampling panels: per layer Whh, then Wxh (layers > 0), then Why
    cdef Py_ssize_t* offh
    cdef Py_ssize_t* offx
    cdef Py_ssize_t offy
    cdef double[:, ::1] wx0T     # (V, G*H) the first layer's Wxh transposed: a column in one stretch
    cdef double[::1] ax, wz, hn, cn, auxb, ybuf, scratch
    cdef bint flip               # the direction of the last step's Whh pass (sampling and scoring)

    def __cinit__(self):
        self.Wx = self.Wh = self.b = self.dWx = self.dWh = self.db = NULL
        self.P = self.D = self.M = self.Vm = NULL
        self.sizes = self.offh = self.offx = NULL

    def __dealloc__(self):
        free(self.Wx); free(self.Wh); free(self.b); free(self.dWx); free(self.dWh); free(self.db)
        free(self.P); free(self.D); free(self.M); free(self.Vm)
        free(self.sizes)
        free(self.offh)
        free(self.offx)

    def __init__(self, params, mem=None, Py_ssize_t T=25, cell="lstm", layers=1, optimizer=None,
                 moments=None, steps=None):
        from charstream import cells
        cell, layers = cells.check(cell, layers)
        if "Whh" not in params or "by" not in params:
            raise ValueError("params must hold Whh and by")
        H, V = np.shape(params["Whh"])[1], np.shape(params["by"])[0]
        if V < 1:
            raise ValueError("the vocabulary is empty: train on some text first")
        if H < 1:
            raise ValueError(f"the hidden size must be at least 1, got {H}")
        if T < 1:
            raise ValueError(f"T must be at least 1, got {T}")
        table = cells.params(cell, layers, V, H)
        for p in table:
            _check(params.get(p.name), p.name, p.shape)
        self.optimizer = optimizer or cells.OPTIMIZER[cell]
        self.input_lr = 1.0
        if self.optimizer not in ("adagrad", "adam"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}")
        G = cells.GATES[cell]
        self.cell, self.code = cell, {"rnn": CS_RNN, "gru": CS_GRU, "lstm": CS_LSTM}[cell]
        self.H, self.V, self.T, self.L, self.G = H, V, T, layers, G
        self.GH = G * H
        self.GHp = (self.GH + 7) // 8 * 8
        self.Hp = (H + 7) // 8 * 8
        self.Vp = (V + 7) // 8 * 8
        self.Tp = (T + 31) // 32 * 32
        self.S = cells.STATE[cell]
        names = [p.name for p in table]
        keep = [params[k] for k in names]
        L = layers
        name = cells.layer_name
        self.Wx = _pointers([params[name("Wxh", l)] for l in range(L)])
        self.Wh = _pointers([params[name("Whh", l)] for l in range(L)])
        self.b = _pointers([params[name("bh", l)] for l in range(L)])
        self._keep = list(keep)
        self.Why = _first(params["Why"])
        self.by = _first(params["by"])
        self.nparams = len(names)
        self.sizes = <Py_ssize_t*>malloc(len(names) * sizeof(Py_ssize_t))
        if self.sizes == NULL:
            raise MemoryError()
        for i, k in enumerate(names):
            self.sizes[i] = params[k].size
        self.P = _pointers(keep)
        self._grads = None
        if mem is not None:
            for k in names:
                _check(mem.get(k), "m" + k, params[k].shape)
            self._grads = {k: np.zeros_like(params[k]) for k in names}
            self.D = _pointers([self._grads[k] for k in names])
            self.M = _pointers([mem[k] for k in names])
            self.dWx = _pointers([self._grads[name("Wxh", l)] for l in range(L)])
            self.dWh = _pointers([self._grads[name("Whh", l)] for l in range(L)])
            self.db = _pointers([self._grads[name("bh", l)] for l in range(L)])
            self.dWhy, self.dby = _first(self._grads["Why"]), _first(self._grads["by"])
            self._keep += [mem[k] for k in names] + [self._grads[k] for k in names]
            if self.optimizer == "adam":
                if moments is None or steps is None:
                    raise ValueError("Adam needs moments and a step count")
                for k in names:
                    _check(moments.get(k), "v" + k, params[k].shape)
                if not isinstance(steps, np.ndarray) or steps.dtype != np.int64 or steps.shape != (1,):
                    raise ValueError("steps must be a (1,) int64 array")
                self.Vm = _pointers([moments[k] for k in names])
                self.steps = steps
                self._keep += [moments[k] for k in names] + [steps]
            Lc = L if cell == "lstm" else 1
            self.hs = np.zeros((L, T + 1, H))
            self.cs = np.zeros((Lc, T + 1, H))
            self.acts = np.zeros((L, T, self.GH))
            self.aux = np.zeros((L, T, H))
            self.da = np.zeros((L, T, self.GH))
            self.dw = np.zeros((L if cell == "gru" else 1, T, self.GH))
            self.dhx = np.zeros((L, T, H))
            self.hsT = np.zeros((H, self.Tp + 1))
            self.ys = np.zeros((V, self.Tp))
            self.tbuf = np.zeros(3 * T)
            self.wxT = np.zeros((H, self.GH))
            self.pf = np.zeros(self.GHp * H + 8)
            self.pb = np.zeros(self.Hp * self.GH + 8)
            self.zbuf = np.zeros(self.GHp)
            self.dhnext = np.zeros(self.Hp)
            self.dhp = np.zeros(H)
            self.dcn = np.zeros(H)
        self.hbuf = np.zeros(L * self.S * H)
        # sampling and scoring
        self.offh = <Py_ssize_t*>malloc(L * sizeof(Py_ssize_t))
        self.offx = <Py_ssize_t*>malloc(L * sizeof(Py_ssize_t))
        if self.offh == NULL or self.offx == NULL:
            raise MemoryError()
        cdef Py_ssize_t off = 0
        for l in range(L):
            self.offh[l] = off
            off += self.GHp * H
            self.offx[l] = off
            off += self.GHp * H if l > 0 else 0
        self.offy = off
        self.ipan = np.zeros(off + self.Vp * H + 8)
        self.wx0T = np.zeros((V, self.GH))
        self.ax = np.zeros(self.GHp)
        self.wz = np.zeros(self.GHp)
        self.hn = np.zeros(H)
        self.cn = np.zeros(H)
        self.auxb = np.zeros(H)
        self.ybuf = np.zeros(self.Vp)
        self.scratch = np.zeros(V)

    @property
    def grads(self):
        """The gradients of the last `loss_and_grads` call, keyed like the parameters."""
        return self._grads

    cdef double _forward_backward(self, const int* xs, Py_ssize_t n, double* state) noexcept nogil:
        """Equivalent to the numpy oracle's `loss_fun(cell, params, xs[:n], xs[1:n+1], state)`
        (tests/oracle_cells.py): fills the gradients, sets state to the last one and returns the
        summed cross-entropy in nats.

        Layer by layer: the input side of a whole chunk is a gather (layer 0) or one product, the
        recurrence a panel matvec per step; the backward runs the layers top down, each one's
        weight gradients and the gradient into the layer below as products over the chunk.
        """
        self.nlast = n
        cdef Py_ssize_t H = self.H, V = self.V, GH = self.GH, S = self.S, l, t, i, g, lc
        cdef int cell = self.code
        cdef bint lstm = cell == CS_LSTM, gru = cell == CS_GRU
        cdef double* Pf = _aligned(&self.pf[0])
        cdef double* Pb = _aligned(&self.pb[0])
        cdef double* z = &self.zbuf[0]
        cdef double* dhnext = &self.dhnext[0]
        cdef double* dhp = &self.dhp[0]
        cdef double* dcn = &self.dcn[0]
        cdef double* wxT = &self.wxT[0, 0]
        cdef double* hsl
        cdef double* csl
        cdef double* A
        cdef double* X
        cdef double* D
        cdef double* DA
        cdef double* DW
        cdef double* d
        cdef const double* Wx
        cdef const double* bl
        cdef double loss

        for l in range(self.L):
            lc = l if lstm else 0
            hsl, csl, A, X = &self.hs[l, 0, 0], &self.cs[lc, 0, 0], &self.acts[l, 0, 0], &self.aux[l, 0, 0]
            memcpy(hsl, state + l * S * H, H * sizeof(double))
            if lstm:
                memcpy(csl, state + l * S * H + H, H * sizeof(double))
            Wx, bl = self.Wx[l], self.b[l]
            if l == 0:     # a_t = Wxh[:, x_t] + bh
                for t in range(n):
                    for g in range(GH):
                        A[t * GH + g] = Wx[g * V + xs[t]] + bl[g]
            else:          # a = hs_below[1:n+1] @ Wxh.T + bh, one product
                for t in range(n):
                    memcpy(A + t * GH, bl, GH * sizeof(double))
                for g in range(GH):
                    for i in range(H):
                        wxT[i * GH + g] = Wx[g * H + i]
                cs_gemm_acc(A, GH, &self.hs[l - 1, 1, 0], H, 1, wxT, GH, n, H, GH, 1)
            if CS_PANELS:
                cs_pack(self.Wh[l], GH, H, Pf, 0)
            for t in range(n):
                panel_or_rows(Pf, self.Wh[l], GH, H, hsl + t * H, z, t & 1)
                cs_cell_forward(cell, H, A + t * GH, z, hsl + t * H, csl + t * H, hsl + (t + 1) * H,
                                csl + (t + 1) * H, X + t * H)

        l = self.L - 1
        loss = head_loss(xs, n, V, H, self.Tp, self.Why, self.by, &self.hs[l, 0, 0], &self.hsT[0, 0],
                         &self.ys[0, 0], &self.tbuf[0], self.dWhy, self.dby, &self.dhx[l, 0, 0])

        while l >= 0:
            lc = l if lstm else 0
            hsl, csl, A, X = &self.hs[l, 0, 0], &self.cs[lc, 0, 0], &self.acts[l, 0, 0], &self.aux[l, 0, 0]
            D, DA = &self.dhx[l, 0, 0], &self.da[l, 0, 0]
            DW = &self.dw[l, 0, 0] if gru else DA
            memset(dhnext, 0, H * sizeof(double))
            memset(dcn, 0, H * sizeof(double))
            if CS_PANELS:
                cs_pack_t(self.Wh[l], GH, H, Pb)
            t = n - 1
            while t >= 0:
                d = D + t * H
                for i in range(H):
                    d[i] += dhnext[i]
                cs_cell_backward(cell, H, d, dcn, A + t * GH, X + t * H, hsl + (t + 1) * H, hsl + t * H,
                                 csl + t * H, DA + t * GH, DW + t * GH, dhp)
                if t > 0:      # dhnext = Whh^T dw_t (+ the GRU's z dh_t)
                    if CS_PANELS:
                        cs_panel_matvec(Pb, self.Hp // 8, GH, DW + t * GH, dhnext, t & 1)
                    else:
                        vecmat(DW + t * GH, self.Wh[l], GH, H, dhnext, t & 1)
                    if gru:
                        for i in range(H):
                            dhnext[i] += dhp[i]
                t -= 1
            # dWhh = dw.T @ hs[:n], dbh = da.sum(0), dWxh = da.T @ inputs
            cs_gemm_acc(self.dWh[l], H, DW, 1, GH, hsl, H, GH, n, H, 0)
            memset(self.db[l], 0, GH * sizeof(double))
            for t in range(n):
                for g in range(GH):
                    self.db[l][g] += DA[t * GH + g]
            if l == 0:
                memset(self.dWx[0], 0, GH * V * sizeof(double))
                for t in range(n):
                    for g in range(GH):
                        self.dWx[0][g * V + xs[t]] += DA[t * GH + g]
            else:
                cs_gemm_acc(self.dWx[l], H, DA, 1, GH, &self.hs[l - 1, 1, 0], H, GH, n, H, 0)
                cs_gemm_acc(&self.dhx[l - 1, 0, 0], H, DA, GH, 1, self.Wx[l], H, n, GH, H, 0)
            l -= 1

        for l in range(self.L):
            memcpy(state + l * S * H, &self.hs[l, n, 0], H * sizeof(double))
            if lstm:
                memcpy(state + l * S * H + H, &self.cs[l, n, 0], H * sizeof(double))
        return loss

    cdef void _update(self, double lr) noexcept nogil:
        """Equivalent to, for each parameter: Adagrad's `g = np.clip(d, -5, 5); m += g * g;
        p += -lr * g / np.sqrt(m + 1e-8)`, or Adam's (cs_adam, steps += 1 first) on
        `g = np.clip(d, -5 n, 5 n)` for gradients summed over n steps."""
        cdef Py_ssize_t i
        cdef double c1, c2
        if self.Vm != NULL:
            self.steps[0] += 1
            c1 = 1.0 / (1.0 - pow(ADAM_BETA1, <double>self.steps[0]))
            c2 = 1.0 / (1.0 - pow(ADAM_BETA2, <double>self.steps[0]))
            for i in range(self.nparams):
                cs_adam(self.P[i], self.D[i], self.M[i], self.Vm[i], self.sizes[i], lr * self.input_lr if i == 0 else lr,
                        ADAM_BETA1, ADAM_BETA2, c1, c2, ADAM_EPS, ADAM_CLIP_PER_CHAR * self.nlast)
        else:
            for i in range(self.nparams):
                cs_adagrad(self.P[i], self.D[i], self.M[i], self.sizes[i], lr)

    def loss_and_grads(self, const int[::1] xs, double[::1] hprev):
        """Forward and backward over inputs xs[:-1] and targets xs[1:]; fills `grads`, updates
        hprev (the flat state) in place to the last state and returns the summed loss in nats."""
        cdef Py_ssize_t n = xs.shape[0] - 1
        self._check_chunk(xs, hprev, 0, n)
        with nogil:
            loss = self._forward_backward(&xs[0], n, &hprev[0])
        return loss

    def update(self, double lr):
        """Clip the gradients of the last `loss_and_grads` to [-5, 5] and take one step of the
        kernel's optimizer (Adagrad, or Adam)."""
        self._need_mem()
        with nogil:
            self._update(lr)

    def adagrad(self, double lr):
        """`update(lr)` for a kernel whose optimizer is Adagrad."""
        if self.optimizer != "adagrad":
            raise ValueError(f"this kernel's optimizer is {self.optimizer}: call update()")
        self.update(lr)

    def train_chunk(self, const int[::1] xs, Py_ssize_t s, double[::1] hprev, double lr):
        """`loss_and_grads(xs[s:s+T+1], hprev)` then `update(lr)`, unless the loss is not finite,
        in which case nothing is updated (hprev and the step count included). Returns the loss."""
        cdef Py_ssize_t n = self.T, k = self.hbuf.shape[0]
        cdef double loss
        self._check_chunk(xs, hprev, s, n)
        with nogil:
            memcpy(&self.hbuf[0], &hprev[0], k * sizeof(double))
            loss = self._forward_backward(&xs[s], n, &self.hbuf[0])
            if is_finite(loss):
                self._update(lr)
                memcpy(&hprev[0], &self.hbuf[0], k * sizeof(double))
        return loss

    cdef void _prepare(self) noexcept nogil:
        """Pack the sampling panels and transpose the first layer's Wxh."""
        cdef Py_ssize_t l, H = self.H, V = self.V, GH = self.GH
        cdef double* P = _aligned(&self.ipan[0])
        cdef const double* W = self.Wx[0]
        if CS_PANELS:
            for l in range(self.L):
                cs_pack(self.Wh[l], GH, H, P + self.offh[l], 0)
                if l > 0:
                    cs_pack(self.Wx[l], GH, H, P + self.offx[l], 0)
            cs_pack(self.Why, V, H, P + self.offy, 0)
        cs_transpose(W, GH, V, &self.wx0T[0, 0])

    cdef void _advance(self, int x, double* state) noexcept nogil:
        """Equivalent to the oracle's one step of every layer on input x, state updated in place."""
        cdef Py_ssize_t l, g, H = self.H, GH = self.GH, S = self.S
        cdef double* P = _aligned(&self.ipan[0])
        cdef double* a = &self.ax[0]
        cdef double* w = &self.wz[0]
        cdef const double* wx = &self.wx0T[x, 0]
        cdef const double* bl
        cdef double* h
        # Whh's panels are taken in the other order from the last step's, so that the ones it read
        # last are still in L2 (a layer's Whh at H=256 is 1.5-2 MB against 1 MB of L2); the same sums.
        self.flip = not self.flip
        for l in range(self.L):
            h = state + l * S * H
            bl = self.b[l]
            if l == 0:
                for g in range(GH):
                    a[g] = wx[g] + bl[g]
            else:
                panel_or_rows(P + self.offx[l], self.Wx[l], GH, H, h - S * H, a, 0)
                for g in range(GH):
                    a[g] += bl[g]
            panel_or_rows(P + self.offh[l], self.Wh[l], GH, H, h, w, self.flip)
            cs_cell_forward(self.code, H, a, w, h, h + H, &self.hn[0], &self.cn[0], &self.auxb[0])
            memcpy(h, &self.hn[0], H * sizeof(double))
            if self.code == CS_LSTM:
                memcpy(h + H, &self.cn[0], H * sizeof(double))

    cdef double* _logits(self, const double* state) noexcept nogil:
        """`Why @ h_top` (no bias) into ybuf, h_top the last layer's h."""
        cdef double* y = &self.ybuf[0]
        panel_or_rows(_aligned(&self.ipan[0]) + self.offy, self.Why, self.V, self.H,
                      state + (self.L - 1) * self.S * self.H, y, 0)
        return y

    def evaluate(self, const int[::1] xs, double[::1] h):
        """Equivalent to summing `-log softmax(Why h_t + by)[xs[t+1]]` over t, stepping the state h
        through xs[:-1] (updated in place); no gradients, no update."""
        cdef Py_ssize_t n = xs.shape[0] - 1, t
        cdef double loss = 0.0, lz, m
        cdef double* y
        self._check_state(h)
        self._check_indices(xs, 0, xs.shape[0])
        with nogil:
            self._prepare()
            for t in range(n):
                self._advance(xs[t], &h[0])
                y = self._logits(&h[0])
                m = add_bias_max(y, self.by, self.V)
                lz = y[xs[t + 1]]
                loss += log(cs_exp_affine(y, self.V, m, 1.0)) + m - lz
        return loss

    def step(self, const int[::1] xs, double[::1] h):
        """Equivalent to `for x in xs: h = cell_step(x, h)` for every layer (the oracle's step)."""
        cdef Py_ssize_t t
        self._check_state(h)
        self._check_indices(xs, 0, xs.shape[0])
        with nogil:
            self._prepare()
            for t in range(xs.shape[0]):
                self._advance(xs[t], &h[0])

    def probs(self, const double[::1] h, double[::1] p, double temperature=1.0):
        """Equivalent to `p[:] = softmax((Why @ h_top + by) / temperature)`."""
        self._check_state(h)
        if p.shape[0] != self.V:
            raise ValueError(f"p must be ({self.V},), got ({p.shape[0]},)")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        cdef Py_ssize_t k
        cdef double inv = 1.0 / temperature
        cdef const double* top = &h[0] + (self.L - 1) * self.S * self.H
        with nogil:
            logits(self.Why, self.by, self.V, self.H, top, &p[0], 0)
            for k in range(self.V):
                p[k] *= inv
            softmax(&p[0], self.V)

    def sample(self, double[::1] h, const double[::1] u, int[::1] out, double temperature=1.0,
               bint greedy=False, Py_ssize_t top_k=0):
        """For each n: draw out[n] from `softmax((Why @ h_top + by) / temperature)` by inverse CDF at
        u[n] in [0, 1) (cut to its top_k most probable first when 0 < top_k < V), then step the
        state h through it. With `greedy`, out[n] is `np.argmax(Why @ h_top + by)` (the first on
        ties) and u is not read."""
        cdef Py_ssize_t n, k, V = self.V
        cdef double inv
        cdef double* y
        self._check_state(h)
        if u.shape[0] < out.shape[0]:
            raise ValueError(f"need {out.shape[0]} uniforms, got {u.shape[0]}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        inv = 1.0 / temperature
        with nogil:
            self._prepare()
            for n in range(out.shape[0]):
                y = self._logits(&h[0])
                if greedy:
                    k = argmax_logits(y, self.by, V)
                else:
                    k = draw_logits(y, self.by, V, inv, u[n], top_k, &self.scratch[0])
                out[n] = <int>k
                self._advance(<int>k, &h[0])

    cdef _need_mem(self):
        if self._grads is None:
            raise ValueError("this kernel was built without optimizer memories: it cannot train")

    cdef _check_state(self, const double[::1] h):
        if h.shape[0] != self.hbuf.shape[0]:
            raise ValueError(f"h must be ({self.hbuf.shape[0]},) (the state of {self.L} {self.cell} "
                             f"layer{'s' if self.L > 1 else ''} of H={self.H}), got ({h.shape[0]},)")
        _check_finite(h, "h")

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
        self._check_state(hprev)
        self._check_indices(xs, s, s + n + 1)


cdef _check_finite(const double[::1] h, str name):
    """ValueError unless every value of the state is finite (a NaN would reach the top-k quickselect)."""
    cdef Py_ssize_t i
    for i in range(h.shape[0]):
        if not is_finite(h[i]):
            raise ValueError(f"{name} has a NaN or infinite value at {i}")


cdef double* _first(a) except NULL:
    """The data pointer of a C-contiguous float64 array (kept alive by the caller)."""
    cdef double[::1] flat = a.reshape(-1)
    return &flat[0]
