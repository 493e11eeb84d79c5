"""LaneKernel (B lanes, float64 or float32, any thread count) against the numpy oracle in the same dtype,
finite differences, CellKernel, and itself on other thread counts (to the bit)."""
import numpy as np
import pytest

import oracle_cells as O
from charstream import cells
from charstream._kernel import CellKernel, LaneKernel, openmp

SHAPES = [("rnn", 1, 7, 12), ("gru", 1, 7, 12), ("lstm", 1, 9, 13), ("gru", 2, 11, 20), ("lstm", 2, 70, 40),
          ("rnn", 3, 5, 8)]
# float64 as tight as CellKernel's own tests; float32 to its precision (sums of ~100 terms of ~1e-7 each)
TOL = {np.float64: 1e-9, np.float32: 2e-4}


def _params(cell, L, V, H, dtype, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    return {p.name: (rng.standard_normal(p.shape) * scale).astype(dtype) for p in cells.params(cell, L, V, H)}


def _zeros_like(p):
    return {k: np.zeros_like(v) for k, v in p.items()}


def _scaled_close(actual, desired, rtol):
    scale = max(float(np.abs(desired).max()), 1e-30)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale)


def _kernel(cell, L, p, mem, T, lanes, threads=1, optimizer=None):
    vm = _zeros_like(p)
    steps = np.zeros(1, dtype=np.int64)
    return LaneKernel(p, mem, T, cell=cell, layers=L, optimizer=optimizer, moments=vm, steps=steps,
                      lanes=lanes, threads=threads)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell,L,V,H", SHAPES)
@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])
def test_lanes_match_the_oracle(cell, L, V, H, optimizer, dtype):
    B, T, lr, tol = 3, 7, 0.01, TOL[dtype]
    rng = np.random.default_rng(1)
    p = _params(cell, L, V, H, dtype)
    op = {k: v.copy() for k, v in p.items()}
    mem = _zeros_like(p)
    om, ov = _zeros_like(p), _zeros_like(p)
    k = _kernel(cell, L, p, mem, T, B, optimizer=optimizer)
    xs = rng.integers(0, V, (B, 3 * T + 1)).astype(np.int32)
    state = rng.uniform(-0.5, 0.5, (B, cells.state_size(cell, L, H))).astype(dtype)
    ostate = state.copy()
    for c in range(3):
        chunk = np.ascontiguousarray(xs[:, c * T:c * T + T + 1])
        loss = k.loss_and_grads(chunk, state)
        oloss, grads, ostate = O.loss_fun_lanes(cell, L, op, chunk, ostate)
        assert loss == pytest.approx(oloss, rel=tol)
        for name in grads:
            assert k.grads[name].dtype == dtype
            _scaled_close(k.grads[name], grads[name], tol)
        np.testing.assert_allclose(state, ostate, rtol=tol, atol=tol)
        k.update(lr)
        O.update(optimizer, op, grads, om, ov, c + 1, lr, T)
        for name in p:
            assert p[name].dtype == dtype
            _scaled_close(p[name], op[name], 10 * tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell,L", [("rnn", 1), ("gru", 2), ("lstm", 2)])
def test_finite_differences(cell, L, dtype):
    """The gradient of the lanes' mean loss against central differences of the loss itself (computed in
    float64 from float32-rounded parameters for the float32 kernel)."""
    B, T, V, H = 2, 5, 6, 7
    rng = np.random.default_rng(2)
    p = _params(cell, L, V, H, dtype, scale=0.5)
    k = _kernel(cell, L, p, _zeros_like(p), T, B)
    xs = rng.integers(0, V, (B, T + 1)).astype(np.int32)
    h0 = rng.uniform(-0.5, 0.5, (B, cells.state_size(cell, L, H))).astype(dtype)
    k.loss_and_grads(xs, h0.copy())
    p64 = {n: v.astype(np.float64) for n, v in p.items()}
    eps = 1e-5
    for name in p:
        flat = p64[name].reshape(-1)
        for i in rng.choice(flat.size, size=min(4, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            up = O.loss_fun_lanes(cell, L, p64, xs, h0.astype(np.float64))[0]
            flat[i] = old - eps
            down = O.loss_fun_lanes(cell, L, p64, xs, h0.astype(np.float64))[0]
            flat[i] = old
            numeric = (up - down) / (2 * eps) / B
            assert k.grads[name].reshape(-1)[i] == pytest.approx(numeric, rel=1e-3 if dtype == np.float32 else 1e-5,
                                                                 abs=1e-4 if dtype == np.float32 else 1e-8)


@pytest.mark.skipif(not openmp(), reason="built without OpenMP: one thread only")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell,L,V,H", [("lstm", 2, 70, 40), ("gru", 1, 65, 130), ("rnn", 1, 33, 100)])
def test_the_thread_count_changes_nothing(cell, L, V, H, dtype):
    """Trained for a few chunks on 1, 2 and 3 threads: parameters, memories and states equal to the bit."""
    B, T = 5, 9
    rng = np.random.default_rng(3)
    xs = rng.integers(0, V, (B, 4 * T + 1)).astype(np.int32)
    results = []
    for threads in (1, 2, 3):
        p = _params(cell, L, V, H, dtype, seed=4)
        mem = _zeros_like(p)
        k = _kernel(cell, L, p, mem, T, B, threads=threads)
        assert k.threads == threads
        h = np.zeros((B, cells.state_size(cell, L, H)), dtype=dtype)
        losses = [k.train_chunk(xs, s, h, 0.01) for s in range(0, 4 * T, T)]
        u = rng.random((B, 50)) if threads == 1 else results[0][4]
        out = np.zeros((B, 50), dtype=np.int32)
        k.sample_lanes(h.copy(), u, out, np.full(B, 1.25), np.zeros(B, bool), np.array([0, 3, 0, 0, 2]))
        results.append((p, mem, h, losses, u, out))
    for p, mem, h, losses, _, out in results[1:]:
        for name in p:
            assert np.array_equal(p[name], results[0][0][name]), name
            assert np.array_equal(mem[name], results[0][1][name]), name
        assert np.array_equal(h, results[0][2])
        assert losses == results[0][3]
        assert np.array_equal(out, results[0][5])


@pytest.mark.parametrize("cell,L", [("rnn", 1), ("gru", 1), ("lstm", 2)])
def test_one_lane_float64_agrees_with_cellkernel(cell, L):
    """The same chunk through CellKernel and a one-lane LaneKernel: the same numbers to rounding."""
    V, H, T = 11, 16, 10
    p = _params(cell, L, V, H, np.float64)
    q = {k: v.copy() for k, v in p.items()}
    rng = np.random.default_rng(5)
    xs = rng.integers(0, V, T + 1).astype(np.int32)
    h = rng.uniform(-0.5, 0.5, cells.state_size(cell, L, H))
    g = h.copy()
    a = CellKernel(p, _zeros_like(p), T, cell=cell, layers=L, moments=_zeros_like(p), steps=np.zeros(1, np.int64))
    b = _kernel(cell, L, q, _zeros_like(q), T, 1)
    assert b.loss_and_grads(xs, g) == pytest.approx(a.loss_and_grads(xs, h), rel=1e-12)
    for name in p:
        _scaled_close(b.grads[name], a.grads[name], 1e-11)
    np.testing.assert_allclose(g, h, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell,L", [("rnn", 1), ("lstm", 2), ("gru", 1)])
def test_scoring_and_stepping_match_the_oracle(cell, L, dtype):
    V, H, B = 9, 14, 3
    tol = TOL[dtype]
    p = _params(cell, L, V, H, dtype)
    k = LaneKernel(p, None, 1, cell=cell, layers=L, lanes=B)
    rng = np.random.default_rng(6)
    xs = rng.integers(0, V, (B, 20)).astype(np.int32)
    h = rng.uniform(-0.5, 0.5, (B, cells.state_size(cell, L, H))).astype(dtype)
    expect = [O.evaluate(cell, L, p, xs[b], h[b].copy()) for b in range(B)]
    losses = k.evaluate(xs, h)
    for b in range(B):
        assert losses[b] == pytest.approx(expect[b][0], rel=tol)
        np.testing.assert_allclose(h[b], expect[b][1], rtol=tol, atol=tol)
    one = h[0].copy()
    k.step(xs[0, :5], one)
    st = O.split(cell, L, H, h[0].copy())
    for x in xs[0, :5]:
        st = O.advance(cell, L, p, st, x)
    np.testing.assert_allclose(one, O.join(cell, st), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sampling_draws_from_the_oracles_distribution(dtype):
    """Each lane's draw is the inverse CDF of the oracle's softmax at its uniform (greedy: the argmax),
    the state stepped through it."""
    cell, L, V, H, B, n = "lstm", 2, 8, 10, 4, 30
    p = _params(cell, L, V, H, dtype, scale=0.8)
    k = LaneKernel(p, None, 1, cell=cell, layers=L, lanes=B)
    rng = np.random.default_rng(7)
    h = rng.uniform(-0.5, 0.5, (B, cells.state_size(cell, L, H))).astype(dtype)
    u = rng.random((B, n))
    inv = np.array([1.0, 2.0, 0.5, 1.0])
    greedy = np.array([False, False, False, True])
    top_k = np.array([0, 0, 3, 0])
    out = np.zeros((B, n), dtype=np.int32)
    start = h.copy()
    k.sample_lanes(h, u, out, inv, greedy, top_k)
    for b in range(B):
        st = O.split(cell, L, H, start[b].astype(np.float64))
        p64 = {name: v.astype(np.float64) for name, v in p.items()}
        for s in range(n):
            y = (p64["Why"] @ st[-1][0] + p64["by"])
            if greedy[b]:
                assert out[b, s] == int(np.argmax(y))
            else:
                w = np.exp((y - y.max()) * inv[b])
                if top_k[b]:
                    w[np.argsort(-w, kind="stable")[top_k[b]:]] = 0
                cdf = np.cumsum(w) / w.sum()
                want = int(np.searchsorted(cdf, u[b, s], side="right"))
                near = np.abs(cdf - u[b, s]).min() < (1e-4 if dtype == np.float32 else 1e-9)
                assert out[b, s] == want or near, (b, s)
            st = O.advance(cell, L, p64, st, int(out[b, s]))


def test_bad_arguments_are_refused():
    p = _params("lstm", 1, 5, 6, np.float32)
    with pytest.raises(ValueError, match="lanes must be at least 1"):
        LaneKernel(p, None, 4, cell="lstm", lanes=0)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        LaneKernel(p, None, 4, cell="lstm", threads=0)
    mixed = dict(p, Why=p["Why"].astype(np.float64))
    with pytest.raises(ValueError, match="Why must be float32"):
        LaneKernel(mixed, None, 4, cell="lstm")
    k = LaneKernel(p, _zeros_like(p), 4, cell="lstm", moments=_zeros_like(p), steps=np.zeros(1, np.int64), lanes=2)
    with pytest.raises(ValueError, match="h must be float32"):
        k.loss_and_grads(np.zeros((2, 5), np.int32), np.zeros((2, 12)))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        k.loss_and_grads(np.full((2, 5), 7, np.int32), np.zeros((2, 12), np.float32))
    with pytest.raises(ValueError, match=r"h must be \(2, 12\)"):
        k.loss_and_grads(np.zeros((2, 5), np.int32), np.zeros((3, 12), np.float32))



@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])
@pytest.mark.parametrize("kind", ["lanes", "cell"])
def test_the_clip_is_5_for_adagrad_and_5_per_step_for_adam(kind, optimizer):
    """Gradients between 5 and 5n (n steps summed) pass Adam's clip whole; Adagrad's are cut at 5.
    Two steps: Adam's first step is lr * sign(g) whatever the clip."""
    cell, L, V, H, T = "lstm", 1, 6, 5, 7
    p = _params(cell, L, V, H, np.float64)
    op = {k: v.copy() for k, v in p.items()}
    mem, om, ov = _zeros_like(p), _zeros_like(p), _zeros_like(p)
    n = T - 2                                           # a short chunk: the clip follows its length
    xs = np.arange(n + 1, dtype=np.int32) % V
    if kind == "lanes":
        k = _kernel(cell, L, p, mem, T, 1, optimizer=optimizer)
    else:
        k = CellKernel(p, mem, T, cell=cell, layers=L, optimizer=optimizer, moments=_zeros_like(p),
                       steps=np.zeros(1, dtype=np.int64))
    rng = np.random.default_rng(1)
    wide = 0
    for t in (1, 2):
        k.loss_and_grads(xs, np.zeros(cells.state_size(cell, L, H)))
        grads = {}
        for name, g in k.grads.items():                 # the kernel's own buffers: set them by hand
            g[...] = rng.uniform(-8 * n, 8 * n, g.shape)
            grads[name] = g.copy()
            wide += int(((np.abs(g) > 5) & (np.abs(g) < 5 * n)).sum())
        k.update(0.01)
        O.update(optimizer, op, grads, om, ov, t, 0.01, n)
        for name in p:
            np.testing.assert_allclose(p[name], op[name], rtol=1e-12, atol=1e-15)
    assert wide > 100                                   # the two clips differ on these


@pytest.mark.parametrize("kind,dtype", [("lanes", np.float64), ("lanes", np.float32), ("cell", np.float64)])
def test_adam_steps_the_input_weights_input_lr_times(kind, dtype):
    """Wxh (layer 0) steps input_lr * lr, every other parameter lr, against the oracle; Model.kernel
    hands the model's input_lr (cells.INPUT_LR for a new gated model) to the kernel."""
    cell, L, V, H, T, B = "gru", 2, 9, 6, 5, 1 if kind == "cell" else 3
    p = _params(cell, L, V, H, dtype)
    op = {k: v.copy() for k, v in p.items()}
    mem, om, ov = _zeros_like(p), _zeros_like(p), _zeros_like(p)
    if kind == "lanes":
        k = _kernel(cell, L, p, mem, T, B, optimizer="adam")
    else:
        k = CellKernel(p, mem, T, cell=cell, layers=L, optimizer="adam", moments=_zeros_like(p),
                       steps=np.zeros(1, dtype=np.int64))
    assert k.input_lr == 1.0
    k.input_lr = 30.0
    rng = np.random.default_rng(3)
    xs = rng.integers(0, V, (B, 3 * T + 1)).astype(np.int32)
    state = np.zeros((B, cells.state_size(cell, L, H)), dtype=dtype)
    ostate = state.copy()
    for c in range(3):
        chunk = np.ascontiguousarray(xs[:, c * T:c * T + T + 1])
        h = state if kind == "lanes" else state[0]
        k.loss_and_grads(chunk if kind == "lanes" else chunk[0], h)
        _, grads, ostate = O.loss_fun_lanes(cell, L, op, chunk, ostate)
        k.update(0.01)
        O.update("adam", op, grads, om, ov, c + 1, 0.01, T, input_lr=30.0)
    for name in p:
        _scaled_close(p[name], op[name], TOL[dtype])
    moved = np.abs(p["Wxh"] - _params(cell, L, V, H, dtype)["Wxh"]).max()
    assert moved > 0.1                                  # 3 steps of ~0.3, not of ~0.01


def test_a_new_gated_model_carries_its_input_lr_to_the_kernel_and_the_file(tmp_path):
    import charstream
    m = charstream.Model(list("abc"), hidden_size=4, cell="lstm", random_seed=0)
    assert m.input_lr == cells.INPUT_LR
    assert m.kernel(5, train=True).input_lr == cells.INPUT_LR
    assert m.kernel(5, train=True, lanes=2).input_lr == cells.INPUT_LR
    m.save(tmp_path / "m.npz")
    assert charstream.Model.load(tmp_path / "m.npz").input_lr == cells.INPUT_LR
    assert charstream.Model(list("abc"), hidden_size=4, cell="rnn").input_lr == 1.0



def test_float32_adam_survives_a_moment_fading_below_the_normal_range():
    """A character unseen for thousands of steps: its column's v decays to about 1e-38 and under; the
    step stays finite (it was NaN: -ffast-math's sqrt of a denormal) and the moment goes to zero."""
    cell, L, V, H, T = "lstm", 1, 5, 8, 4
    p = _params(cell, L, V, H, np.float32)
    mem, vm = _zeros_like(p), _zeros_like(p)
    k = LaneKernel(p, mem, T, cell=cell, layers=L, optimizer="adam", moments=vm,
                   steps=np.full(1, 5000, dtype=np.int64), lanes=2)
    xs = np.zeros((2, T + 1), dtype=np.int32)       # only character 0: the other columns' gradients are 0
    h = np.zeros((2, cells.state_size(cell, L, H)), dtype=np.float32)
    for v in (1.2e-38, 1.16e-38, 5e-39, 1e-40, 1e-45):
        vm["Wxh"][:, 1:] = v
        mem["Wxh"][:, 1:] = 6e-45                   # Adam's first moment: as faded
        before = p["Wxh"][:, 1:].copy()
        k.loss_and_grads(xs, h)
        k.update(0.01)
        assert np.isfinite(p["Wxh"]).all(), v
        np.testing.assert_allclose(p["Wxh"][:, 1:], before, atol=1e-6)
        assert (vm["Wxh"][:, 1:] == 0).all()
