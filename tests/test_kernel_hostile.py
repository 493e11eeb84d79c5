"""The compiled kernels against bad arguments: a kernel keeps alive every array it writes through a
pointer, refuses H=0 and non-finite states, and the library refuses temperatures whose inverse overflows."""
import gc
import weakref

import numpy as np
import pytest

import charstream
from charstream import cells, samplers
from charstream._kernel import CellKernel, Kernel


def _params(cell, layers, V=5, H=4, seed=0):
    rng = np.random.default_rng(seed)
    return {p.name: p.initial(rng) for p in cells.params(cell, layers, V, H)}


def test_a_cell_kernel_keeps_its_arrays_alive_when_the_dicts_change():
    """What Model.grow does: the dicts get new arrays. The ones the kernel points into must live on."""
    params = _params("lstm", 2)
    mem = {k: np.zeros_like(v) for k, v in params.items()}
    moments = {k: np.zeros_like(v) for k, v in params.items()}
    steps = np.zeros(1, dtype=np.int64)
    k = CellKernel(params, mem, 8, cell="lstm", layers=2, moments=moments, steps=steps)
    refs = [weakref.ref(a) for d in (params, mem, moments) for a in d.values()] + [weakref.ref(steps)]
    for d in (params, mem, moments):
        for name in list(d):
            d[name] = np.full_like(d[name], 7.0)
    del steps
    gc.collect()
    assert all(r() is not None for r in refs)
    xs = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3], dtype=np.int32)
    assert np.isfinite(k.train_chunk(xs, 0, np.zeros(cells.state_size("lstm", 2, 4)), 0.01))
    assert all((d[n] == 7.0).all() for d in (params, mem, moments) for n in d)   # the new arrays untouched
    del k
    gc.collect()
    assert all(r() is None for r in refs)   # and nothing leaks once the kernel is gone


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # the table's 1 / sqrt(H) at H=0
@pytest.mark.parametrize("cell, layers", [("rnn", 1), ("gru", 1), ("lstm", 2)])
def test_zero_hidden_size_is_refused(cell, layers):
    params = {p.name: np.zeros(p.shape) for p in cells.params(cell, layers, 3, 0)}
    K = Kernel if (cell, layers) == ("rnn", 1) else CellKernel
    kw = {} if K is Kernel else {"cell": cell, "layers": layers}
    with pytest.raises(ValueError, match="the hidden size must be at least 1, got 0"):
        K(params, None, 5, **kw)


@pytest.mark.parametrize("cell, layers", [("rnn", 1), ("gru", 1), ("lstm", 2)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_states_are_refused(cell, layers, bad):
    m = charstream.Model("abcde", hidden_size=4, seed=0, cell=cell, layers=layers)
    k = m.kernel()
    h = np.zeros(cells.state_size(cell, layers, 4))
    h[-1] = bad
    xs = np.array([0, 1, 2], dtype=np.int32)
    with pytest.raises(ValueError, match="NaN or infinite"):
        k.step(xs, h)
    with pytest.raises(ValueError, match="NaN or infinite"):
        k.sample(h, np.zeros(3), np.zeros(3, dtype=np.int32), 1.0, False, 2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        k.probs(h, np.zeros(5), 1.0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        k.evaluate(xs, h)
    with pytest.raises(ValueError, match="NaN or infinite"):
        m.kernel(train=True).train_chunk(np.arange(m.state.seq_length + 1, dtype=np.int32) % 5, 0, h, 0.1)


@pytest.mark.parametrize("t", [5e-324, 1e-310, 0.0, -1.0, float("nan"), float("inf"), True, "1"])
def test_temperatures_whose_inverse_overflows_are_refused_by_the_library(t):
    m = charstream.Model("abc", hidden_size=4, seed=0)
    with pytest.raises(ValueError, match="temperature"):
        samplers.check_temperature(t)
    with pytest.raises(ValueError, match="temperature"):
        m.generate(temperature=t, length=3)
    with pytest.raises(ValueError, match="temperature"):
        m.generate_blocks(temperature=t, length=3)


def test_the_smallest_temperature_whose_inverse_is_finite_works():
    m = charstream.Model("abc", hidden_size=4, seed=0)
    t = 1e-307   # 1 / t = 1e307: finite
    assert samplers.check_temperature(t) == t
    assert len("".join(m.generate(temperature=t, length=10, random_seed=0))) == 10
