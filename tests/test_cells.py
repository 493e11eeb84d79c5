"""The cells' compiled kernel (CellKernel) against the numpy oracle and finite differences, and every
feature through it: chunking, growth, resume, samplers, eval, the NaN guard, the command line."""
import numpy as np
import pytest
from click.testing import CliRunner

import charstream
import oracle_cells as O
from charstream import cells
from charstream._kernel import CellKernel, Kernel
from charstream.cli import main

SHAPES = [("gru", 1, 7, 12), ("lstm", 1, 7, 12), ("rnn", 2, 7, 12), ("gru", 2, 11, 20), ("lstm", 3, 9, 13),
          ("rnn", 3, 5, 8)]


def _params(cell, L, V, H, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    return {p.name: rng.standard_normal(p.shape) * scale for p in cells.params(cell, L, V, H)}


def _scaled_close(actual, desired, rtol):
    scale = max(np.abs(desired).max(), 1e-300)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("cell,L,V,H", SHAPES)
@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])
def test_chunks_match_the_oracle(cell, L, V, H, optimizer):
    T, lr = 9, 0.01
    rng = np.random.default_rng(1)
    p = _params(cell, L, V, H)
    op = {k: v.copy() for k, v in p.items()}
    mem = {k: np.zeros_like(v) for k, v in p.items()}
    vm = {k: np.zeros_like(v) for k, v in p.items()}
    om, ov = {k: np.zeros_like(v) for k, v in p.items()}, {k: np.zeros_like(v) for k, v in p.items()}
    steps = np.zeros(1, dtype=np.int64)
    k = CellKernel(p, mem, T, cell=cell, layers=L, optimizer=optimizer, moments=vm, steps=steps)
    xs = rng.integers(0, V, 4 * T + 1).astype(np.int32)
    state = rng.uniform(-0.5, 0.5, cells.state_size(cell, L, H))
    ostate = state.copy()
    for c in range(4):
        chunk = xs[c * T:c * T + T + 1]
        loss = k.loss_and_grads(np.ascontiguousarray(chunk), state)
        oloss, grads, ostate = O.loss_fun(cell, L, op, chunk[:-1], chunk[1:], ostate)
        assert loss == pytest.approx(oloss, rel=1e-12)
        for name in grads:
            _scaled_close(k.grads[name], grads[name], 1e-10)
        np.testing.assert_allclose(state, ostate, rtol=1e-10, atol=1e-12)
        k.update(lr)
        O.update(optimizer, op, grads, om, ov, c + 1, lr, T)
        for name in p:
            _scaled_close(p[name], op[name], 1e-9)
            _scaled_close(mem[name], om[name], 1e-9)
    assert steps[0] == (4 if optimizer == "adam" else 0)


@pytest.mark.parametrize("cell,L,V,H", SHAPES[:5])
def test_gradients_match_finite_differences(cell, L, V, H):
    rng = np.random.default_rng(3)
    T = 7
    p = _params(cell, L, V, H, seed=4)
    mem = {k: np.zeros_like(v) for k, v in p.items()}
    xs = rng.integers(0, V, T + 1).astype(np.int32)
    s0 = rng.uniform(-0.5, 0.5, cells.state_size(cell, L, H))
    k = CellKernel(p, mem, T, cell=cell, layers=L, optimizer="adagrad")
    k.loss_and_grads(xs, s0.copy())
    grads = {n: g.copy() for n, g in k.grads.items()}
    eps = 1e-5
    for name, a in p.items():
        flat = a.reshape(-1)
        for i in rng.choice(flat.size, min(flat.size, 12), replace=False):
            old = flat[i]
            flat[i] = old + eps
            lp = k.loss_and_grads(xs, s0.copy())
            flat[i] = old - eps
            lm = k.loss_and_grads(xs, s0.copy())
            flat[i] = old
            num, ana = (lp - lm) / (2 * eps), grads[name].reshape(-1)[i]
            assert abs(num - ana) <= 1e-6 * max(abs(num), abs(ana), 1e-3), (name, i, num, ana)


@pytest.mark.parametrize("cell,L,V,H", SHAPES)
def test_evaluate_step_and_probs_match_the_oracle(cell, L, V, H):
    rng = np.random.default_rng(5)
    p = _params(cell, L, V, H, scale=0.2)
    xs = rng.integers(0, V, 300).astype(np.int32)
    s0 = rng.uniform(-0.5, 0.5, cells.state_size(cell, L, H))
    k = CellKernel(p, None, 25, cell=cell, layers=L)
    h = s0.copy()
    loss = k.evaluate(xs, h)
    oloss, oh = O.evaluate(cell, L, p, xs, s0)
    assert loss == pytest.approx(oloss, rel=1e-11)
    np.testing.assert_allclose(h, oh, rtol=1e-10, atol=1e-12)
    h = s0.copy()
    k.step(xs[:-1], h)
    np.testing.assert_allclose(h, oh, rtol=1e-10, atol=1e-12)
    pr = np.empty(V)
    k.probs(h, pr, 0.7)
    y = (p["Why"] @ O.split(cell, L, H, oh)[-1][0] + p["by"]) / 0.7
    np.testing.assert_allclose(pr, np.exp(y - y.max()) / np.exp(y - y.max()).sum(), rtol=1e-10)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_compiled_samplers_equal_the_python_path(cell, shakespeare):
    m = charstream.Model(sorted(set(shakespeare)), hidden_size=16, cell=cell, layers=2, seed=1)
    list(charstream.Trainer(m).train([shakespeare[:3000]]))
    for kw in ({}, {"temperature": 0.7}, {"sampler": "greedy"}, {"top_k": 5}):
        fast = "".join(c for c, _ in zip(m.generate("Th", random_seed=3, **kw), range(600)))
        slow_kw = dict(kw)
        slow_kw["sampler"] = _python(kw.get("sampler", "temperature"))
        slow = "".join(c for c, _ in zip(m.generate("Th", random_seed=3, **slow_kw), range(600)))
        assert fast == slow, kw


def _python(name):
    """A callable sampler doing what the named built-in does, so generate takes the Python path."""
    from charstream import samplers
    f = samplers.greedy if name == "greedy" else samplers.temperature
    return lambda p, rng: f(p, rng)


@pytest.mark.parametrize("cell,layers", [("gru", 1), ("lstm", 2), ("rnn", 2)])
def test_chunking_growth_and_resume_are_exact(cell, layers, shakespeare, tmp_path):
    text = shakespeare[:4000]
    whole = charstream.Model("", hidden_size=12, cell=cell, layers=layers, seed=2)
    list(charstream.Trainer(whole).train([text]))
    pieces = charstream.Model("", hidden_size=12, cell=cell, layers=layers, seed=2)
    list(charstream.Trainer(pieces).train([text[i:i + 333] for i in range(0, len(text), 333)]))
    resumed = charstream.Model("", hidden_size=12, cell=cell, layers=layers, seed=2)
    list(charstream.Trainer(resumed).train([text[:1717]]))
    resumed.save(tmp_path / "m.npz")
    resumed = charstream.load(tmp_path / "m.npz")
    list(charstream.Trainer(resumed).train([text[1717:]]))
    for other in (pieces, resumed):
        assert other.vocab == whole.vocab
        for name in whole.params:
            np.testing.assert_array_equal(other.params[name], whole.params[name])
            np.testing.assert_array_equal(other.state.mem[name], whole.state.mem[name])
        for name in whole.state.moments:
            np.testing.assert_array_equal(other.state.moments[name], whole.state.moments[name])
        np.testing.assert_array_equal(other.state.hprev, whole.state.hprev)
        assert other.state.steps[0] == whole.state.steps[0]
    assert whole.state.steps[0] == (whole.state.chunks if cell != "rnn" else 0)
    assert whole.kernel().__class__ is CellKernel
    assert whole.vocab_size == len(set(text))


def test_one_rnn_layer_keeps_the_min_char_rnn_kernel():
    assert type(charstream.Model("ab", 8).kernel()) is Kernel


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_non_finite_loss_updates_nothing(cell):
    p = _params(cell, 2, 5, 4)
    p["by"][2] = np.nan
    mem = {k: np.zeros_like(v) for k, v in p.items()}
    vm = {k: np.zeros_like(v) for k, v in p.items()}
    steps = np.zeros(1, dtype=np.int64)
    before = {k: v.copy() for k, v in p.items()}
    h = np.full(cells.state_size(cell, 2, 4), 0.25)
    k = CellKernel(p, mem, 3, cell=cell, layers=2, moments=vm, steps=steps)
    loss = k.train_chunk(np.array([0, 1, 2, 3], dtype=np.int32), 0, h, 0.1)
    assert not np.isfinite(loss)
    for name in p:
        np.testing.assert_array_equal(p[name], before[name])
        assert not mem[name].any() and not vm[name].any()
    np.testing.assert_array_equal(h, 0.25)
    assert steps[0] == 0


def test_state_size_is_checked_with_numbers():
    k = CellKernel(_params("lstm", 2, 5, 4), None, 3, cell="lstm", layers=2)
    with pytest.raises(ValueError, match=r"h must be \(16,\)"):
        k.step(np.zeros(1, dtype=np.int32), np.zeros(4))


def test_lstm_starts_with_its_forget_gate_open():
    m = charstream.Model("abc", cell="lstm", layers=2, hidden_size=5, seed=0)
    for b in ("bh", "bh1"):
        np.testing.assert_array_equal(m.params[b], np.r_[np.zeros(5), np.ones(5), np.zeros(10)])


def test_cli_creates_and_describes_a_cell_model(tmp_path):
    path = str(tmp_path / "m.npz")
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world, hello cells. " * 20)
    r = CliRunner().invoke(main, ["train", str(corpus), "--model", path, "--cell", "gru", "--layers", "2",
                                  "--hidden-size", "8", "--sample-every", "0"])
    assert r.exit_code == 0, r.output
    m = charstream.load(path)
    assert (m.cell, m.layers, m.hidden_size) == ("gru", 2, 8) and m.state.steps[0] == m.state.chunks > 0
    r = CliRunner().invoke(main, ["info", "--model", path])
    assert "cell           gru, 2 layers" in r.output and "adam" in r.output
    before = open(path, "rb").read()
    for args, msg in ((["--cell", "lstm"], "has cell gru"), (["--layers", "3"], "has layers 2"),
                      (["--cell", "tree"], "'tree' is not one of"), (["--layers", "0"], "0 is not in the range")):
        r = CliRunner().invoke(main, ["train", str(corpus), "--model", path] + args)
        assert r.exit_code == 2 and msg in r.output, r.output
        assert open(path, "rb").read() == before


def test_store_refuses_a_missing_or_negative_adam_moment(tmp_path):
    m = charstream.Model("abc", cell="lstm", hidden_size=4, seed=0)
    meta, arrays = m.to_arrays()
    charstream.store.write(tmp_path / "ok.npz", meta, arrays)
    assert charstream.load(tmp_path / "ok.npz").state.moments.keys() == m.params.keys()
    bad = dict(arrays)
    del bad["vWhh"]
    charstream.store.write(tmp_path / "a.npz", meta, bad)
    with pytest.raises(charstream.errors.ModelFileError, match="missing vWhh"):
        charstream.load(tmp_path / "a.npz")
    bad = dict(arrays, vWhh=-np.ones_like(arrays["vWhh"]))
    charstream.store.write(tmp_path / "b.npz", meta, bad)
    with pytest.raises(charstream.errors.ModelFileError, match="vWhh has a negative"):
        charstream.load(tmp_path / "b.npz")
    charstream.store.write(tmp_path / "c.npz", dict(meta, steps=-1), arrays)
    with pytest.raises(charstream.errors.ModelFileError, match="step count"):
        charstream.load(tmp_path / "c.npz")
