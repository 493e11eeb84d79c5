"""Dropout in LaneKernel: the same masks as the numpy oracle (the counter hash of ext/lanes.h), its
gradients against the oracle and finite differences with the mask fixed, off when scoring, the same
for any thread count, and training with it: exact resume, the one-lane path, refusals."""
import numpy as np
import pytest

import charstream
import oracle_cells as O
from charstream import cells
from charstream._kernel import LaneKernel, openmp
from helpers import assert_same_file
from test_lanes import TOL, _params, _scaled_close, _zeros_like

SHAPES = [("lstm", 2, 9, 13), ("gru", 2, 7, 12), ("rnn", 2, 5, 8), ("lstm", 1, 11, 70)]


def _kernel(cell, L, p, T, B, rate, seed, threads=1, optimizer=None):
    k = LaneKernel(p, _zeros_like(p), T, cell=cell, layers=L, optimizer=optimizer, moments=_zeros_like(p),
                   steps=np.zeros(1, dtype=np.int64), lanes=B, threads=threads)
    k.set_dropout(rate, seed)
    return k


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell,L,V,H", SHAPES)
def test_dropout_matches_the_oracle_with_the_same_masks(cell, L, V, H, dtype):
    B, T, rate, seed, tol = 3, 6, 0.3, 12345, TOL[dtype]
    rng = np.random.default_rng(7)
    p = _params(cell, L, V, H, dtype)
    op = {k: v.copy() for k, v in p.items()}
    om, ov = _zeros_like(p), _zeros_like(p)
    k = _kernel(cell, L, p, T, B, rate, seed)
    xs = rng.integers(0, V, (B, 3 * T + 1)).astype(np.int32)
    state = rng.uniform(-0.5, 0.5, (B, cells.state_size(cell, L, H))).astype(dtype)
    ostate = state.copy()
    optimizer = cells.OPTIMIZER[cell]
    for c in range(3):
        k.dropout_step = 40 + c
        n = T if c < 2 else T - 2   # a short last chunk: the masks of its first steps
        chunk = np.ascontiguousarray(xs[:, c * T:c * T + n + 1])
        masks = O.drop_masks(seed, 40 + c, rate, L, T, B, H, n, dtype)
        kept = float((masks > 0).mean())
        assert 0.5 < kept < 0.9   # about 1 - rate kept
        start = ostate.copy()
        loss = k.loss_and_grads(chunk, state)
        oloss, grads, ostate = O.loss_fun_lanes(cell, L, op, chunk, ostate, masks)
        assert loss == pytest.approx(oloss, rel=tol)
        for name in grads:
            _scaled_close(k.grads[name], grads[name], tol)
        np.testing.assert_allclose(state, ostate, rtol=tol, atol=tol)
        without = O.loss_fun_lanes(cell, L, op, chunk, start, None)[0]
        assert abs(without - oloss) > 1e-6   # the masks changed something
        k.update(0.01)
        O.update(optimizer, op, grads, om, ov, c + 1, 0.01, n)


@pytest.mark.parametrize("cell,L", [("lstm", 2), ("gru", 2), ("rnn", 1)])
def test_finite_differences_with_the_mask_fixed(cell, L):
    B, T, V, H, rate, seed = 2, 5, 6, 7, 0.4, 99
    rng = np.random.default_rng(2)
    p = _params(cell, L, V, H, np.float64, scale=0.5)
    k = _kernel(cell, L, p, T, B, rate, seed)
    k.dropout_step = 3
    xs = rng.integers(0, V, (B, T + 1)).astype(np.int32)
    h0 = rng.uniform(-0.5, 0.5, (B, cells.state_size(cell, L, H)))
    k.loss_and_grads(xs, h0.copy())
    masks = O.drop_masks(seed, 3, rate, L, T, B, H, T, np.float64)
    eps = 1e-5
    for name in p:
        flat = p[name].reshape(-1)
        for i in rng.choice(flat.size, size=min(4, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            up = O.loss_fun_lanes(cell, L, p, xs, h0, masks)[0]
            flat[i] = old - eps
            down = O.loss_fun_lanes(cell, L, p, xs, h0, masks)[0]
            flat[i] = old
            assert k.grads[name].reshape(-1)[i] == pytest.approx((up - down) / (2 * eps) / B, rel=1e-5, abs=1e-8)


def test_the_masks_depend_on_the_step_and_the_seed_and_rate_zero_is_no_dropout():
    cell, L, V, H, B, T = "lstm", 2, 9, 13, 2, 5
    rng = np.random.default_rng(3)
    xs = rng.integers(0, V, (B, T + 1)).astype(np.int32)
    h = np.zeros((B, cells.state_size(cell, L, H)))

    def loss(rate, seed, step):
        k = _kernel(cell, L, _params(cell, L, V, H, np.float64), T, B, rate, seed)
        k.dropout_step = step
        return k.loss_and_grads(xs, h.copy())
    plain = LaneKernel(_params(cell, L, V, H, np.float64), _zeros_like(_params(cell, L, V, H, np.float64)), T,
                       cell=cell, layers=L, moments=_zeros_like(_params(cell, L, V, H, np.float64)),
                       steps=np.zeros(1, dtype=np.int64), lanes=B).loss_and_grads(xs, h.copy())
    assert loss(0.0, 5, 1) == plain
    assert loss(0.3, 5, 1) == loss(0.3, 5, 1)
    assert len({loss(0.3, 5, 1), loss(0.3, 5, 2), loss(0.3, 6, 1), plain}) == 4


@pytest.mark.skipif(not openmp(), reason="built without OpenMP: one thread only")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dropout_is_the_same_for_any_thread_count(dtype):
    cell, L, V, H, B, T = "lstm", 2, 70, 40, 5, 9
    rng = np.random.default_rng(3)
    xs = rng.integers(0, V, (B, 4 * T + 1)).astype(np.int32)
    results = []
    for threads in (1, 2, 3):
        p = _params(cell, L, V, H, dtype, seed=4)
        k = _kernel(cell, L, p, T, B, 0.5, 77, threads=threads)
        h = np.zeros((B, cells.state_size(cell, L, H)), dtype=dtype)
        losses = []
        for step, s in enumerate(range(0, 4 * T, T)):
            k.dropout_step = step
            losses.append(k.train_chunk(xs, s, h, 0.01))
        results.append((losses, p, h))
    for losses, p, h in results[1:]:
        assert losses == results[0][0]
        assert all(np.array_equal(p[n], results[0][1][n]) for n in p) and np.array_equal(h, results[0][2])


def test_the_kernel_refuses_bad_rates_and_scoring_kernels_cannot_drop():
    p = _params("lstm", 1, 5, 4, np.float64)
    k = _kernel("lstm", 1, p, 3, 1, 0.1, 1)
    for bad in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="dropout rate must be in"):
            k.set_dropout(bad, 1)
    with pytest.raises(ValueError, match="dropout seed"):
        k.set_dropout(0.1, -1)
    with pytest.raises(ValueError, match="cannot train"):
        LaneKernel(p, None, 3, cell="lstm").set_dropout(0.1, 1)
