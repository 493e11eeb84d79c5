# LaneKernel: B lanes of any cell and layer count, float64 or float32, on N threads (included by
# _rnn_step.pyx; the C is ext/lanes.h and ext/lanes_ops.h, the design in docs/kernel.md).

cdef extern from "lanes.h" nogil:
    ctypedef struct cs_lanes:
        int cell, f32, nt
        Py_ssize_t H, V, L, G, GH, S, SC, B, T, Vp, ldT
        void** Wx
        void** Wh
        void** b
        void* Why
        void* by
        void** dWx
        void** dWh
        void** db
        void* dWhy
        void* dby
        void** P
        void** D
        void** M
        void** Vm
        Py_ssize_t* sizes
        Py_ssize_t nparams
        double input_lr
        void* hs
        void* cs
        void* acts
        void* aux
        void* da
        void* dw
        void* dhx
        void* ys
        void* tT
        void* wT
        void* wx0T
        void* wP
        void* pk
        Py_ssize_t* opk
        void* gx0T
        void* dhnext
        void* dcn
        void* dhp
        void* hn
        void* cn
        void* z
        double* rowloss
        double* yd
        double* scratch
        int* xin
        Py_ssize_t* offh
        Py_ssize_t* offx
        Py_ssize_t offy
        int stale
        double loss
        unsigned long long dkey
        unsigned long long keep_bits
        double dscale
        void* dm
        void* hd
    unsigned long long cs_drop_key(unsigned long long seed, unsigned long long step)
    double cs_lanes_chunk(cs_lanes* c, const int* xs, Py_ssize_t ldx, Py_ssize_t n, void* state, double scale)
    void cs_lanes_update(cs_lanes* c, double lr, double c1, double c2)
    Py_ssize_t cs_lanes_layout(cs_lanes* c)
    void cs_lanes_run(cs_lanes* c, Py_ssize_t Bn, const int* xs, Py_ssize_t ldx, Py_ssize_t n, void* state,
                      double* losses)
    void cs_lanes_sample(cs_lanes* c, Py_ssize_t Bn, void* state, const double* u, Py_ssize_t ldu, int* out,
                         Py_ssize_t ldo, Py_ssize_t n, const double* inv, const unsigned char* greedy,
                         const Py_ssize_t* top_k)
    void cs_lanes_probs(cs_lanes* c, const void* state, double* p, double inv)
    int cs_openmp()

import os

DTYPES = ("float64", "float32")


def openmp():
    """True when this kernel was built with OpenMP (threads), False for a one-thread build."""
    return bool(cs_openmp())


cdef void* _data(a):
    """The data pointer of a numpy array (kept alive by the caller)."""
    return <void*><size_t>a.__array_interface__["data"][0]


def _aligned_zeros(n, dtype):
    """n zeros of dtype starting on a 64-byte boundary (its base array is kept by numpy)."""
    item = np.dtype(dtype).itemsize
    raw = np.zeros(n + 64 // item, dtype=dtype)
    skip = (-raw.__array_interface__["data"][0] % 64) // item
    return raw[skip:skip + n]


cdef void** _table(list arrays) except NULL:
    """A malloc'd array of the arrays' data pointers."""
    cdef void** p = <void**>malloc((len(arrays) + 1) * sizeof(void*))
    if p == NULL:
        raise MemoryError()
    for i, a in enumerate(arrays):
        p[i] = _data(a)
    return p


cdef class LaneKernel:
    """Forward, backward, optimizer, scoring and sampling for B lanes of one model, updated in place.

    Lane b of a chunk is row b of xs (B, n+1) and of the state (B, S): B independent stretches of
    text, each with its own hidden state, whose gradients are averaged into one update. The
    parameters may be float64 or float32 (all of one type; the state must have it too); `threads`
    is the OpenMP team's size and never changes a result. With lanes=1 and float64 it computes what
    CellKernel does, by other products (to rounding, not to the bit). Shapes and names come from
    `charstream.cells.params`; mem, moments and steps are the optimizer's as for CellKernel.
    """
    cdef cs_lanes c
    cdef public Py_ssize_t H, V, T, L, G, B
    cdef public str cell, optimizer
    cdef public object dtype
    cdef object _keep, _grads
    cdef long long[::1] steps
    cdef bint training
    cdef public double dropout
    cdef public double input_lr     # Adam's step for Wxh (layer 0) is input_lr * lr; Adagrad ignores it
    cdef unsigned long long _dseed, _dstep

    def __cinit__(self):
        memset(&self.c, 0, sizeof(cs_lanes))

    def __dealloc__(self):
        free(self.c.Wx); free(self.c.Wh); free(self.c.b); free(self.c.dWx); free(self.c.dWh); free(self.c.db)
        free(self.c.P); free(self.c.D); free(self.c.M); free(self.c.Vm)
        free(self.c.sizes); free(self.c.offh); free(self.c.offx); free(self.c.opk)

    def __init__(self, params, mem=None, Py_ssize_t T=25, cell="lstm", layers=1, optimizer=None, moments=None,
                 steps=None, Py_ssize_t lanes=1, threads=1):
        from charstream import cells
        cell, layers = cells.check(cell, layers)
        if "Whh" not in params or "by" not in params:
            raise ValueError("params must hold Whh and by")
        H, V = np.shape(params["Whh"])[1], np.shape(params["by"])[0]
        if H < 1:
            raise ValueError("the hidden size H must be at least 1")
        if V < 1:
            raise ValueError("the vocabulary is empty: train on some text first")
        if T < 1:
            raise ValueError(f"T must be at least 1, got {T}")
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, got {lanes}")
        dtype = np.asarray(params["Whh"]).dtype
        if dtype.name not in DTYPES:
            raise ValueError(f"the parameters must be float64 or float32, got {dtype}")
        table = cells.params(cell, layers, V, H)
        names = [p.name for p in table]
        for p in table:
            _check(params.get(p.name), p.name, p.shape, dtype)
        self.optimizer = optimizer or cells.OPTIMIZER[cell]
        self.input_lr = 1.0
        if self.optimizer not in ("adagrad", "adam"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}")
        G = cells.GATES[cell]
        L = layers
        self.cell, self.dtype = cell, dtype
        self.H, self.V, self.T, self.L, self.G, self.B = H, V, T, L, G, lanes
        c = &self.c
        c.cell = {"rnn": CS_RNN, "gru": CS_GRU, "lstm": CS_LSTM}[cell]
        c.f32 = dtype == np.float32
        c.H, c.V, c.L, c.G, c.GH, c.B, c.T = H, V, L, G, G * H, lanes, T
        c.SC = cells.STATE[cell]
        c.S = L * c.SC * H
        c.Vp = (V + 15) // 16 * 16
        c.ldT = (T * lanes + 15) // 16 * 16
        self.threads = threads
        name = cells.layer_name
        arrays = [params[k] for k in names]
        keep = list(arrays)
        c.Wx = _table([params[name("Wxh", l)] for l in range(L)])
        c.Wh = _table([params[name("Whh", l)] for l in range(L)])
        c.b = _table([params[name("bh", l)] for l in range(L)])
        c.Why, c.by = _data(params["Why"]), _data(params["by"])
        c.nparams = len(names)
        c.sizes = <Py_ssize_t*>malloc(len(names) * sizeof(Py_ssize_t))
        if c.sizes == NULL:
            raise MemoryError()
        for i, k in enumerate(names):
            c.sizes[i] = params[k].size
        c.P = _table(arrays)
        self._grads = None
        self.training = mem is not None
        GH, B = G * H, lanes
        def buf(n):
            a = _aligned_zeros(max(int(n), 1), dtype)
            keep.append(a)
            return a
        if self.training:
            for k in names:
                _check(mem.get(k), "m" + k, params[k].shape, dtype)
            self._grads = {k: np.zeros_like(params[k]) for k in names}
            grads = [self._grads[k] for k in names]
            memories = [mem[k] for k in names]
            keep += grads + memories
            c.D, c.M = _table(grads), _table(memories)
            c.dWx = _table([self._grads[name("Wxh", l)] for l in range(L)])
            c.dWh = _table([self._grads[name("Whh", l)] for l in range(L)])
            c.db = _table([self._grads[name("bh", l)] for l in range(L)])
            c.dWhy, c.dby = _data(self._grads["Why"]), _data(self._grads["by"])
            if self.optimizer == "adam":
                if moments is None or steps is None:
                    raise ValueError("Adam needs moments and a step count")
                for k in names:
                    _check(moments.get(k), "v" + k, params[k].shape, dtype)
                if not isinstance(steps, np.ndarray) or steps.dtype != np.int64 or steps.shape != (1,):
                    raise ValueError("steps must be a (1,) int64 array")
                vm = [moments[k] for k in names]
                keep += vm + [steps]
                c.Vm = _table(vm)
                self.steps = steps
            Lc = L if cell == "lstm" else 1
            c.hs = _data(buf(L * (T + 1) * B * H))
            c.cs = _data(buf(Lc * (T + 1) * B * H))
            c.acts = _data(buf(L * T * B * GH))
            c.aux = _data(buf(L * T * B * H))
            c.da = _data(buf(T * B * GH))
            c.dw = _data(buf(T * B * GH if cell == "gru" else 1))
            c.dhx = _data(buf(L * T * B * H))
            c.ys = _data(buf(T * B * c.Vp))
            c.tT = _data(buf(max(V, GH) * c.ldT))
            c.gx0T = _data(buf(V * GH))
            c.pk = _data(buf(T * B * H))
            c.dhnext = _data(buf(B * H))
            c.dcn = _data(buf(B * H))
            c.dhp = _data(buf(B * H))
        else:           # scoring and sampling: one step's rows
            c.acts = _data(buf(B * GH))
            c.aux = _data(buf(B * H))
            c.ys = _data(buf(B * c.Vp))
        c.hn = _data(buf(B * H))
        c.cn = _data(buf(B * H))
        c.z = _data(buf(B * GH))
        c.offh = <Py_ssize_t*>malloc(L * sizeof(Py_ssize_t))
        c.offx = <Py_ssize_t*>malloc(L * sizeof(Py_ssize_t))
        if c.offh == NULL or c.offx == NULL:
            raise MemoryError()
        cdef Py_ssize_t off = 0
        for l in range(L):
            c.offh[l] = off
            off += H * GH
            c.offx[l] = off
            off += H * GH if l > 0 else 0
        c.offy = off
        c.wT = _data(buf(off + H * V))
        c.wx0T = _data(buf(V * GH))
        c.opk = <Py_ssize_t*>malloc((4 * L + 2) * sizeof(Py_ssize_t))
        if c.opk == NULL:
            raise MemoryError()
        c.wP = _data(buf(cs_lanes_layout(c)))
        doubles = [_aligned_zeros(max(T * B, 1), np.float64), _aligned_zeros(B * V, np.float64),
                   _aligned_zeros(B * V, np.float64)]
        c.rowloss, c.yd, c.scratch = <double*>_data(doubles[0]), <double*>_data(doubles[1]), <double*>_data(doubles[2])
        xin = np.zeros(B, dtype=np.int32)
        c.xin = <int*>_data(xin)
        keep += doubles + [xin]
        c.stale = 1
        self._keep = keep

    def set_dropout(self, double rate, seed=0):
        """Inverted dropout while training, at `rate` in [0, 1) (0: off), on the non-recurrent
        connections: each layer's output h_t as the layer above and the head read it (the recurrence
        reads it whole). Unit i of lane b's output of layer l at step t of a chunk is kept, times
        1 / (1 - rate), when `splitmix64(key + ((l*T + t)*B + b)*H + i) >> 11 < (1 - rate) * 2**53` with
        key = `splitmix64(seed ^ splitmix64(dropout_step))`: the masks depend on the seed and the
        step alone (never on threads), and no state but the step is needed to draw them again."""
        self._need_training()
        if not 0 <= rate < 1:
            raise ValueError(f"the dropout rate must be in [0, 1), got {rate}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 64:
            raise ValueError(f"the dropout seed must be an integer in [0, 2**64), got {seed!r}")
        self.dropout, self._dseed = rate, int(seed)
        if rate > 0 and self.c.dm == NULL:
            n = max(self.L * self.T * self.B * self.H, 1)
            dm, hd = _aligned_zeros(n, self.dtype), _aligned_zeros(n, self.dtype)
            self._keep += [dm, hd]
            self.c.dm, self.c.hd = _data(dm), _data(hd)
        self.c.dscale = 1.0 / (1.0 - rate)
        self.c.keep_bits = 0 if rate == 0 else <unsigned long long>((1.0 - rate) * 9007199254740992.0)
        self.c.dkey = cs_drop_key(self._dseed, self._dstep)

    @property
    def dropout_step(self):
        """The update the next chunk's dropout masks belong to (the trainer sets it: chunks trained)."""
        return self._dstep

    @dropout_step.setter
    def dropout_step(self, step):
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < 2 ** 64:
            raise ValueError(f"the dropout step must be an integer in [0, 2**64), got {step!r}")
        self._dstep = int(step)
        self.c.dkey = cs_drop_key(self._dseed, self._dstep)

    @property
    def threads(self):
        """The OpenMP team's size (1 without OpenMP); results never depend on it."""
        return self.c.nt

    @threads.setter
    def threads(self, n):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"threads must be a positive integer, got {n!r}")
        self.c.nt = int(n) if cs_openmp() else 1

    @property
    def grads(self):
        """The gradients of the last `loss_and_grads` call (the lanes' mean), keyed like the parameters."""
        return self._grads

    @property
    def state_size(self):
        return self.c.S

    def refresh(self):
        """Read the weights again before the next scoring or sampling (after changing them in place)."""
        self.c.stale = 1

    def loss_and_grads(self, xs, h):
        """Forward and backward over inputs xs[:, :-1] and targets xs[:, 1:] of every lane (xs (B, n+1)
        int32, or (n+1,) for one lane); fills `grads` with the lanes' mean gradient, sets h (B, S), or
        (S,), to the last state and returns the loss summed over the lanes in nats."""
        cdef int[:, ::1] x2 = self._lanes_xs(xs)
        cdef Py_ssize_t n = x2.shape[1] - 1
        self._need_training()
        if n < 1 or n > self.T:
            raise ValueError(f"a chunk has 1 to {self.T} inputs, got {n}")
        h2 = self._lanes_state(h, self.B)
        self._check_indices(x2)
        cdef void* st = _data(h2)
        cdef double scale = 1.0 / self.B, loss
        with nogil:
            loss = cs_lanes_chunk(&self.c, &x2[0, 0], x2.shape[1], n, st, scale)
        return loss

    def update(self, double lr):
        """One step of the optimizer on the gradients of the last `loss_and_grads`, clipped first:
        Adagrad's to [-5, 5], Adam's to 5 per step they sum over (clip(d, -5 n, 5 n))."""
        self._need_training()
        cdef double c1 = 1.0, c2 = 1.0
        if self.c.Vm != NULL:
            self.steps[0] += 1
            c1 = 1.0 / (1.0 - pow(ADAM_BETA1, <double>self.steps[0]))
            c2 = 1.0 / (1.0 - pow(ADAM_BETA2, <double>self.steps[0]))
        self.c.input_lr = self.input_lr
        with nogil:
            cs_lanes_update(&self.c, lr, c1, c2)

    def adagrad(self, double lr):
        """`update(lr)` for a kernel whose optimizer is Adagrad."""
        if self.optimizer != "adagrad":
            raise ValueError(f"this kernel's optimizer is {self.optimizer}: call update()")
        self.update(lr)

    def train_chunk(self, xs, Py_ssize_t s, h, double lr):
        """`loss_and_grads(xs[:, s:s+T+1], h)` then `update(lr)`, unless the loss is not finite, in which
        case nothing is updated (h and the step count included). Returns the summed loss."""
        x2 = self._lanes_xs(xs)
        if s < 0 or s + self.T + 1 > x2.shape[1]:
            raise ValueError(f"chunk [{s}, {s + self.T + 1}) is outside xs of length {x2.shape[1]}")
        h2 = self._lanes_state(h, self.B)
        work = h2.copy()
        loss = self.loss_and_grads(np.ascontiguousarray(x2[:, s:s + self.T + 1]), work)
        if math.isfinite(loss):
            self.update(lr)
            h2[...] = work
        return loss

    def evaluate(self, xs, h):
        """Equivalent to summing `-log softmax(Why h_t + by)[xs[t+1]]` over t, stepping h through
        xs[:-1] from the given state (updated in place): a float for one lane (xs (n+1,), h (S,)), an
        array of each lane's sum for xs (Bn, n+1) and h (Bn, S)."""
        one = np.ndim(xs) == 1
        x2 = self._lanes_xs(xs)
        h2 = self._lanes_state(h, x2.shape[0])
        losses = np.zeros(x2.shape[0])
        self._run(x2, h2, losses, x2.shape[1] - 1)
        return float(losses[0]) if one else losses

    def step(self, xs, h):
        """Equivalent to `for x in xs: h = cell_step(x, h)` for every layer (on each lane for 2-D xs, h)."""
        x2 = self._lanes_xs(xs)
        h2 = self._lanes_state(h, x2.shape[0])
        self._run(x2, h2, None, x2.shape[1])

    cdef _run(self, int[:, ::1] x2, h2, losses, Py_ssize_t n):
        cdef Py_ssize_t Bn = x2.shape[0]
        if Bn > self.B:
            raise ValueError(f"{Bn} lanes given, the kernel has {self.B}")
        self._check_indices(x2)
        if n <= 0:
            return
        cdef void* st = _data(h2)
        cdef double* lp = NULL
        cdef double[::1] lv
        if losses is not None:
            lv = losses
            lp = &lv[0]
        with nogil:
            cs_lanes_run(&self.c, Bn, &x2[0, 0], x2.shape[1], n, st, lp)

    def probs(self, h, double[::1] p, double temperature=1.0):
        """Equivalent to `p[:] = softmax((Why @ h_top + by) / temperature)` (one lane)."""
        h2 = self._lanes_state(h, 1)
        if p.shape[0] != self.V:
            raise ValueError(f"p must be ({self.V},), got ({p.shape[0]},)")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        cdef void* st = _data(h2)
        with nogil:
            cs_lanes_probs(&self.c, st, &p[0], 1.0 / temperature)

    def sample(self, h, const double[::1] u, int[::1] out, double temperature=1.0, bint greedy=False,
               Py_ssize_t top_k=0):
        """One lane: draw out[n] from `softmax((Why @ h_top + by) / temperature)` by inverse CDF at u[n]
        (cut to the top_k most probable first when 0 < top_k < V; the argmax with `greedy`), then step
        the state h (S,) through it."""
        if u.shape[0] < out.shape[0]:
            raise ValueError(f"need {out.shape[0]} uniforms, got {u.shape[0]}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.sample_lanes(self._lanes_state(h, 1), np.asarray(u)[None, :out.shape[0]].copy(),
                          np.asarray(out)[None, :], [1.0 / temperature], [greedy], [top_k])

    def sample_lanes(self, h, u, out, inv_temperature, greedy, top_k):
        """sample() on each of the first Bn lanes together: h (Bn, S), u (Bn, n) doubles, out (Bn, n)
        int32 (a view is written through), and per lane 1/temperature, greedy and top_k."""
        cdef Py_ssize_t Bn = np.shape(out)[0], n = np.shape(out)[1]
        if Bn > self.B:
            raise ValueError(f"{Bn} lanes given, the kernel has {self.B}")
        h2 = self._lanes_state(h, Bn)
        cdef double[:, ::1] uv = np.ascontiguousarray(u, dtype=np.float64)
        if uv.shape[0] != Bn or uv.shape[1] < n:
            raise ValueError(f"u must be ({Bn}, {n}) at least, got {tuple(np.shape(u))}")
        cdef int[:, :] ov = out
        if ov.strides[1] != sizeof(int):
            raise ValueError("out's rows must be contiguous int32")
        cdef double[::1] inv = np.ascontiguousarray(inv_temperature, dtype=np.float64).reshape(-1)
        cdef unsigned char[::1] gr = np.ascontiguousarray(greedy, dtype=np.uint8).reshape(-1)
        cdef Py_ssize_t[::1] tk = np.ascontiguousarray(top_k, dtype=np.intp).reshape(-1)
        if inv.shape[0] != Bn or gr.shape[0] != Bn or tk.shape[0] != Bn:
            raise ValueError(f"inv_temperature, greedy and top_k need {Bn} entries each")
        for b in range(Bn):
            if not (inv[b] > 0 and math.isfinite(inv[b])):
                raise ValueError(f"1/temperature of lane {b} must be a positive finite number, got {inv[b]}")
        if n == 0 or Bn == 0:
            return
        cdef void* st = _data(h2)
        cdef Py_ssize_t ldo = ov.strides[0] // sizeof(int)
        with nogil:
            cs_lanes_sample(&self.c, Bn, st, &uv[0, 0], uv.shape[1], &ov[0, 0], ldo, n, &inv[0], &gr[0], &tk[0])

    cdef _need_training(self):
        if not self.training:
            raise ValueError("this kernel was built without optimizer memories: it cannot train")

    def _lanes_xs(self, xs):
        """xs as C-contiguous int32 rows: (n,) -> (1, n)."""
        a = np.asarray(xs)
        if a.dtype != np.int32:
            raise ValueError(f"xs must be int32, got {a.dtype}")
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2:
            raise ValueError(f"xs must be (n,) or (lanes, n), got shape {a.shape}")
        return np.ascontiguousarray(a)

    def _lanes_state(self, h, Py_ssize_t Bn):
        """h as (Bn, S) rows of the kernel's dtype, a view that writes through to h."""
        if not isinstance(h, np.ndarray):
            raise TypeError(f"h must be a numpy array, got {type(h).__name__}")
        if h.dtype != self.dtype:
            raise ValueError(f"h must be {self.dtype.name}, like the parameters; got {h.dtype}")
        S = int(self.c.S)
        want = (S,) if h.ndim == 1 else (int(Bn), S)
        if h.shape != want or (h.ndim == 1 and Bn != 1):
            raise ValueError(f"h must be {want} (the state of {self.L} {self.cell} layer{'s' if self.L > 1 else ''} "
                             f"of H={self.H}{'' if h.ndim == 1 else f' on {Bn} lanes'}), got {h.shape}")
        if not h.flags.c_contiguous or not h.flags.writeable:
            raise ValueError("h must be C-contiguous and writeable")
        return h.reshape(Bn, S)

    cdef _check_indices(self, int[:, ::1] xs):
        cdef Py_ssize_t b, t
        cdef int V = <int>self.V
        for b in range(xs.shape[0]):
            for t in range(xs.shape[1]):
                if xs[b, t] < 0 or xs[b, t] >= V:
                    raise ValueError(f"index {xs[b, t]} at position {t} of lane {b} is outside the vocabulary (V={V})")

