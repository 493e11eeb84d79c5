"""The compiled kernel against the numpy oracle (min-char-rnn's own math) and finite differences."""
import sys

import numpy as np
import pytest

import charstream
import oracle
from charstream._kernel import Kernel


def _setup(text, H=100, seed=1):
    m = charstream.Model(sorted(set(text)), hidden_size=H, seed=seed)
    idx = m.encode(text)
    return m, idx


def _scaled_close(actual, desired, rtol):
    """assert_allclose relative to the array's largest entry (tiny entries carry rounding only)."""
    scale = max(np.abs(desired).max(), 1e-300)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale)


def test_kernel_is_compiled():
    assert sys.modules[Kernel.__module__].__file__.endswith((".so", ".pyd"))


def test_losses_and_params_match_oracle_over_five_chunks(shakespeare):
    m, idx = _setup(shakespeare)
    p = {k: v.copy() for k, v in m.params.items()}
    mem = {k: np.zeros_like(v) for k, v in p.items()}
    records = list(charstream.Trainer(m).train([shakespeare[:5 * 25 + 1]]))
    losses, hprev = oracle.train(p, mem, list(idx[:5 * 25 + 1]))
    assert len(records) == len(losses) == 5
    np.testing.assert_allclose([r.loss for r in records], losses, rtol=1e-9)
    for k in p:
        _scaled_close(m.params[k], p[k], 1e-8)
        _scaled_close(m.state.mem[k], mem[k], 1e-8)
    np.testing.assert_allclose(m.state.hprev, hprev, rtol=1e-8, atol=1e-10)


def test_gradients_match_oracle(shakespeare):
    m, idx = _setup(shakespeare)
    k = m.kernel(train=True)
    h0 = np.random.default_rng(0).uniform(-0.5, 0.5, m.hidden_size)
    h = h0.copy()
    loss = k.loss_and_grads(idx[:26], h)
    oloss, ograds, oh = oracle.loss_fun(m.params, idx[:25], idx[1:26], h0)
    assert loss == pytest.approx(oloss, rel=1e-12)
    for name, g in ograds.items():
        _scaled_close(k.grads[name], g, 1e-10)
    np.testing.assert_allclose(h, oh, rtol=1e-12)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    V, H, T = 7, 12, 9
    params = {"Wxh": rng.standard_normal((H, V)) * 0.3, "Whh": rng.standard_normal((H, H)) * 0.3,
              "Why": rng.standard_normal((V, H)) * 0.3, "bh": rng.standard_normal(H) * 0.1,
              "by": rng.standard_normal(V) * 0.1}
    mem = {k: np.zeros_like(v) for k, v in params.items()}
    xs = rng.integers(0, V, T + 1).astype(np.int32)
    h0 = rng.uniform(-0.5, 0.5, H)
    k = Kernel(params, mem, T)
    k.loss_and_grads(xs, h0.copy())
    grads = {n: g.copy() for n, g in k.grads.items()}
    eps = 1e-5
    for name, p in params.items():
        flat = p.reshape(-1)
        for i in rng.choice(flat.size, min(flat.size, 20), replace=False):
            old = flat[i]
            flat[i] = old + eps
            lp = k.loss_and_grads(xs, h0.copy())
            flat[i] = old - eps
            lm = k.loss_and_grads(xs, h0.copy())
            flat[i] = old
            num = (lp - lm) / (2 * eps)
            ana = grads[name].reshape(-1)[i]
            assert abs(num - ana) <= 1e-6 * max(abs(num), abs(ana), 1e-3), (name, i, num, ana)


def test_adagrad_clips_and_steps():
    rng = np.random.default_rng(5)
    V, H = 5, 4
    params = {"Wxh": rng.standard_normal((H, V)), "Whh": rng.standard_normal((H, H)) * 3,
              "Why": rng.standard_normal((V, H)) * 3, "bh": np.zeros(H), "by": np.zeros(V)}
    mem = {k: np.zeros_like(v) for k, v in params.items()}
    xs = rng.integers(0, V, 26).astype(np.int32)
    k = Kernel(params, mem, 25)
    k.loss_and_grads(xs, np.zeros(H))
    grads = {n: g.copy() for n, g in k.grads.items()}
    assert max(np.abs(g).max() for g in grads.values()) > 5, "test needs a gradient to clip"
    expect = {n: v.copy() for n, v in params.items()}
    emem = {n: np.zeros_like(v) for n, v in params.items()}
    oracle.adagrad(expect, grads, emem)
    k.adagrad(0.1)
    for n in params:
        np.testing.assert_allclose(params[n], expect[n], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(mem[n], emem[n], rtol=1e-12)


@pytest.mark.parametrize("H,V", [(1, 1), (3, 7), (8, 9), (13, 21), (100, 65)])
def test_adagrad_matches_oracle_on_every_length(H, V):
    # array lengths 1 .. 10,000: the eight-at-a-time path, its tail, and arrays with no full vector
    rng = np.random.default_rng(H * 100 + V)
    params = {"Wxh": rng.standard_normal((H, V)), "Whh": rng.standard_normal((H, H)),
              "Why": rng.standard_normal((V, H)), "bh": rng.standard_normal(H), "by": rng.standard_normal(V)}
    mem = {n: rng.random(v.shape) * 10 ** rng.uniform(-9, 2, v.shape) for n, v in params.items()}
    p0 = {n: v.copy() for n, v in params.items()}
    expect = {n: v.copy() for n, v in params.items()}
    emem = {n: v.copy() for n, v in mem.items()}
    k = Kernel(params, mem, 25)
    for n, g in k.grads.items():
        g[...] = rng.standard_normal(g.shape) * 4   # some beyond the clip
    oracle.adagrad(expect, {n: g.copy() for n, g in k.grads.items()}, emem)
    k.adagrad(0.1)
    for n in params:
        np.testing.assert_allclose(mem[n], emem[n], rtol=1e-15)
        # the steps, to a few ulp of each step (p + step may cancel)
        np.testing.assert_allclose(params[n] - p0[n], expect[n] - p0[n], rtol=1e-13,
                                   atol=4e-16 * np.abs(p0[n]).max())


@pytest.mark.parametrize("H", [1, 20, 100])
def test_evaluate_matches_oracle_over_a_long_text_from_any_state(shakespeare, H):
    m, idx = _setup(shakespeare[:3000], H=H, seed=3)
    rng = np.random.default_rng(H)
    for name, p in m.params.items():  # weights of a trained size, not randn * 0.01; Whh contracting
        p[...] = rng.standard_normal(p.shape) * (0.6 / np.sqrt(H) if name == "Whh" else 0.5)
    # (with a chaotic Whh, randn * 0.3 at H=100, rounding differences grow along the text: any two
    # summation orders, the oracle's included, then disagree by percents after 600 steps)
    h0 = np.tanh(np.random.default_rng(0).standard_normal(H))
    h = h0.copy()
    loss = m.kernel().evaluate(idx[:601], h)
    oloss, _, oh = oracle.loss_fun(m.params, idx[:600], idx[1:601], h0.copy())
    assert loss == pytest.approx(oloss, rel=1e-11)
    np.testing.assert_allclose(h, oh.ravel(), rtol=1e-10, atol=1e-13)


def test_evaluate_matches_oracle_loss(shakespeare):
    m, idx = _setup(shakespeare[:2000])
    h = np.zeros(m.hidden_size)
    loss = m.kernel().evaluate(idx[:26], h)
    oloss, _, oh = oracle.loss_fun(m.params, idx[:25], idx[1:26], np.zeros(m.hidden_size))
    assert loss == pytest.approx(oloss, rel=1e-12)
    np.testing.assert_allclose(h, oh, rtol=1e-12)


def test_sample_follows_the_softmax():
    rng = np.random.default_rng(7)
    V, H = 4, 3
    params = {"Wxh": np.zeros((H, V)), "Whh": np.zeros((H, H)), "Why": np.zeros((V, H)),
              "bh": np.zeros(H), "by": np.log(np.array([0.1, 0.2, 0.3, 0.4]))}
    k = Kernel(params)
    n = 200_000
    out = np.empty(n, dtype=np.int32)
    k.sample(np.zeros(H), rng.random(n), out)
    freq = np.bincount(out, minlength=V) / n
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.005)
    # temperature 0.5 squares the odds
    k.sample(np.zeros(H), rng.random(n), out, 0.5)
    p = np.array([0.1, 0.2, 0.3, 0.4]) ** 2
    np.testing.assert_allclose(np.bincount(out, minlength=V) / n, p / p.sum(), atol=0.005)


def test_probs_matches_numpy():
    rng = np.random.default_rng(8)
    V, H = 6, 5
    params = {"Wxh": rng.standard_normal((H, V)), "Whh": rng.standard_normal((H, H)),
              "Why": rng.standard_normal((V, H)), "bh": rng.standard_normal(H), "by": rng.standard_normal(V)}
    h = rng.standard_normal(H)
    p = np.empty(V)
    Kernel(params).probs(h, p, 0.7)
    y = (params["Why"] @ h + params["by"]) / 0.7
    np.testing.assert_allclose(p, np.exp(y - y.max()) / np.exp(y - y.max()).sum(), rtol=1e-12)


@pytest.mark.parametrize("bad, msg", [
    (lambda p: p.update(Whh=np.zeros((3, 4))), r"Whh must be \(4, 4\)"),
    (lambda p: p.update(Why=np.zeros((5, 4), dtype=np.float32)), "Why must be float64"),
    (lambda p: p.update(Wxh=np.zeros((5, 4)).T), "C-contiguous"),
])
def test_shapes_are_checked_with_numbers(bad, msg):
    params = {"Wxh": np.zeros((4, 5)), "Whh": np.zeros((4, 4)), "Why": np.zeros((5, 4)),
              "bh": np.zeros(4), "by": np.zeros(5)}
    bad(params)
    with pytest.raises(ValueError, match=msg):
        Kernel(params)


def test_out_of_vocabulary_index_is_refused():
    params = {"Wxh": np.zeros((4, 5)), "Whh": np.zeros((4, 4)), "Why": np.zeros((5, 4)),
              "bh": np.zeros(4), "by": np.zeros(5)}
    with pytest.raises(ValueError, match="outside the vocabulary"):
        Kernel(params).step(np.array([0, 5], dtype=np.int32), np.zeros(4))


def test_non_finite_loss_updates_nothing():
    params = {"Wxh": np.zeros((4, 5)), "Whh": np.zeros((4, 4)), "Why": np.zeros((5, 4)),
              "bh": np.zeros(4), "by": np.zeros(5)}
    params["by"][2] = np.nan
    mem = {k: np.zeros_like(v) for k, v in params.items()}
    before = {k: v.copy() for k, v in params.items()}
    h = np.full(4, 0.25)
    loss = Kernel(params, mem, 3).train_chunk(np.array([0, 1, 2, 3], dtype=np.int32), 0, h, 0.1)
    assert not np.isfinite(loss)
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])
        assert not mem[k].any()
    np.testing.assert_array_equal(h, 0.25)


def _at_offset(a, k):
    """A C-contiguous copy of `a` whose data starts k doubles into a fresh 64-byte-aligned buffer."""
    buf = np.empty(a.size + 16)
    start = (-(buf.ctypes.data // 8) % 8) + k
    out = buf[start:start + a.size].reshape(a.shape)
    out[...] = a
    return out


def test_results_do_not_depend_on_alignment(shakespeare):
    """The vectorised loops must give the same bits whatever the arrays' alignment (chunking invariance
    and resume rely on it: numpy gives no alignment guarantee past 16 bytes)."""
    m, idx = _setup(shakespeare[:3000], H=37)
    runs = []
    for k in (0, 1, 3):
        params = {n: _at_offset(v, k) for n, v in m.params.items()}
        mem = {n: _at_offset(np.zeros_like(v), k) for n, v in m.params.items()}
        kern = Kernel(params, mem, 25)
        h = _at_offset(np.zeros(37), k)
        losses = [kern.train_chunk(idx, s, h, 0.1) for s in range(0, 2000, 25)]
        drawn = np.empty(500, dtype=np.int32)
        kern.sample(h.copy(), np.random.default_rng(0).random(500), drawn)
        runs.append((losses, {n: v.copy() for n, v in params.items()}, h.copy(), drawn,
                     kern.evaluate(idx[:300], np.zeros(37))))
    for losses, params, h, drawn, ev in runs[1:]:
        assert losses == runs[0][0]
        for n in params:
            np.testing.assert_array_equal(params[n], runs[0][1][n])
        np.testing.assert_array_equal(h, runs[0][2])
        np.testing.assert_array_equal(drawn, runs[0][3])
        assert ev == runs[0][4]


def test_tanh_within_a_few_ulp_of_numpy():
    # Whh = 0, bh = 0: one step from index 0 gives h = tanh(Wxh[:, 0]); values from 1e-300 to 25
    rng = np.random.default_rng(11)
    a = np.concatenate([rng.uniform(-25, 25, 400), rng.standard_normal(300) * 1e-3,
                        10.0 ** rng.uniform(-300, 0, 300) * rng.choice([-1, 1], 300), [0.0, 20.0, -40.0, 1e3]])
    H = len(a)
    params = {"Wxh": a.reshape(H, 1).copy(), "Whh": np.zeros((H, H)), "Why": np.zeros((1, H)),
              "bh": np.zeros(H), "by": np.zeros(1)}
    h = np.zeros(H)
    Kernel(params).step(np.zeros(1, dtype=np.int32), h)
    ref = np.tanh(a)
    assert (np.abs(h - ref) <= 4 * np.spacing(np.abs(ref))).all(), np.abs(h - ref).max()


def test_softmax_within_a_few_ulp_of_numpy():
    # logits from -800 (exp underflows) to 0; probs() is the kernel's softmax
    rng = np.random.default_rng(12)
    y = np.concatenate([rng.uniform(-800, 0, 500), rng.uniform(-30, 0, 499), [0.0]])
    V = len(y)
    params = {"Wxh": np.zeros((1, V)), "Whh": np.zeros((1, 1)), "Why": np.zeros((V, 1)),
              "bh": np.zeros(1), "by": y.copy()}
    p = np.empty(V)
    Kernel(params).probs(np.zeros(1), p)
    e = np.exp(y - y.max())
    ref = e / e.sum()
    # 8 ulp: the portable build's libm exp is itself up to 4 ulp from numpy's (measured 6 there, 3 here)
    assert (np.abs(p - ref) <= 8 * np.spacing(ref) + 1e-300).all()


@pytest.mark.parametrize("V", [1, 5, 8, 9, 70])
def test_sample_is_the_inverse_cdf_and_never_draws_a_zero_weight(V):
    # Whh = Wxh = Why = 0: every step's logits are by; by = -1000 gives a weight of exactly 0
    rng = np.random.default_rng(V)
    by = rng.uniform(-5, 0, V)
    by[rng.random(V) < 0.3] = -1000.0
    by[rng.integers(V)] = 0.0
    params = {"Wxh": np.zeros((1, V)), "Whh": np.zeros((1, 1)), "Why": np.zeros((V, 1)),
              "bh": np.zeros(1), "by": by}
    u = np.concatenate([rng.random(20000), [0.0, 1.0 - 2 ** -53]])
    out = np.empty(len(u), dtype=np.int32)
    Kernel(params).sample(np.zeros(1), u, out)
    w = np.exp(by - by.max())
    expect = np.minimum(np.searchsorted(np.cumsum(w), u * w.sum(), side="right"), V - 1)
    expect = np.where(w[expect] > 0, expect, np.flatnonzero(w > 0)[-1])   # past the end: the last w > 0
    np.testing.assert_array_equal(out, expect)
    assert (w[out] > 0).all()


@pytest.mark.parametrize("H,V", [(3, 7), (13, 21), (100, 65), (37, 700), (20, 4099)])
def test_sparse_input_update_is_the_dense_one_to_the_bit(H, V):
    """Adagrad on only the 8-entry blocks of Wxh that the chunk's inputs touch gives the dense update's
    bits, for vocabularies where it is used (few inputs against V) and where it is not."""
    rng = np.random.default_rng(H + V)
    text = rng.integers(0, V, 25 * 6 + 1).astype(np.int32)
    runs = []
    for sparse in (True, False):
        g = np.random.default_rng(7)
        params = {"Wxh": g.standard_normal((H, V)) * 0.1, "Whh": g.standard_normal((H, H)) * 0.1,
                  "Why": g.standard_normal((V, H)) * 0.1, "bh": np.zeros(H), "by": np.zeros(V)}
        mem = {n: np.zeros_like(v) for n, v in params.items()}
        k = Kernel(params, mem, 25, sparse=sparse)
        assert k.sparse == sparse
        h = np.zeros(H)
        for s in range(0, 25 * 6, 25):
            k.train_chunk(text, s, h, 0.1)
        runs.append((params, mem, h))
    (p1, m1, h1), (p2, m2, h2) = runs
    for n in p1:
        assert p1[n].tobytes() == p2[n].tobytes(), n
        assert m1[n].tobytes() == m2[n].tobytes(), n
    assert h1.tobytes() == h2.tobytes()
    assert not np.array_equal(p1["Wxh"], runs[0][0]["Wxh"] * 0)   # it trained
