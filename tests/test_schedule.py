"""Learning-rate annealing: the schedule's values, Trainer.lr_scale, and `train --anneal` over a budget."""
import numpy as np
import pytest

import charstream
from charstream.cells import DEFAULTS
from charstream.schedule import Anneal, anneal_scale
from helpers import assert_same_model, invoke


def test_anneal_scale_is_flat_then_linear_to_final():
    for progress in (0.0, 0.3, 0.5):
        assert anneal_scale(progress, 0.5) == 1.0
    assert anneal_scale(0.75, 0.5) == pytest.approx(0.525)
    assert anneal_scale(1.0, 0.5) == pytest.approx(0.05)
    assert anneal_scale(2.0, 0.5) == pytest.approx(0.05)
    assert anneal_scale(0.5, 1.0, final=0.2) == pytest.approx(0.6)
    assert [anneal_scale(p, 0.0) for p in (0.0, 0.99, 1.0)] == [1.0, 1.0, 1.0]
    grid = np.linspace(0, 1, 41)
    assert np.allclose([anneal_scale(p, 0.3) for p in grid], np.interp(grid, [0, 0.7, 1], [1, 1, 0.05]))


@pytest.mark.parametrize("fraction, final", [(-0.1, 0.1), (1.5, 0.1), (0.5, 0.0), (0.5, 1.5)])
def test_anneal_refuses_out_of_range(fraction, final):
    with pytest.raises(ValueError):
        Anneal(fraction, chars=100, final=final)


def test_anneal_follows_the_budget_further_along():
    a = Anneal(0.5, seconds=100, chars=1000)
    assert a.progress(10, 900) == pytest.approx(0.9)
    assert a.progress(80, 100) == pytest.approx(0.8)
    assert a.progress(500, 0) == 1.0
    assert not Anneal(0.5).active and not Anneal(0.0, seconds=10).active
    t = charstream.Trainer(charstream.Model("ab", 4, seed=0))
    Anneal(0.5).update(t, 1e9, 10**9)
    assert t.lr_scale == 1.0          # no budget: a stream with no end keeps its base rate
    Anneal(0.5, chars=100).update(t, 0, 100)
    assert t.lr_scale == pytest.approx(0.05)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_lr_scale_multiplies_the_step(shakespeare, cell):
    """Training at lr 0.02 with lr_scale 0.5 is training at lr 0.01, to the bit; the saved rate stays the base."""
    text = shakespeare[:1500]
    a, b = (charstream.Model("", 8, seed=3, cell=cell) for _ in range(2))
    ta = charstream.Trainer(a, learning_rate=0.02)
    ta.lr_scale = 0.5
    list(ta.train([text]))
    list(charstream.Trainer(b, learning_rate=0.01).train([text]))
    assert a.state.learning_rate == 0.02
    b.state.learning_rate = 0.02
    assert_same_model(a, b)


def _annealed(text, cell, fraction, n):
    """What `train --max-chars n --anneal fraction` should give: the schedule updated after each chunk."""
    m = charstream.Model("", 8, seed=5, cell=cell)
    t = charstream.Trainer(m)
    schedule = Anneal(fraction, chars=n)
    for rec in t.train([text[:n]]):
        schedule.update(t, 0.0, rec.chars)
    return m


@pytest.mark.parametrize("cell, anneal", [("lstm", None), ("lstm", "0.8"), ("rnn", None), ("rnn", "0.5")])
def test_train_anneals_over_max_chars(tmp_path, shakespeare, cell, anneal):
    """The command anneals as the library does (each cell's default when --anneal is not given), and
    annealing changes the model: the figure compared is not the same either way."""
    n = 2000
    (tmp_path / "a.txt").write_text(shakespeare[:5000], encoding="utf-8")
    args = ["train", tmp_path / "a.txt", "--model", tmp_path / "m.npz", "--cell", cell, "--hidden-size", 8,
            "--random-seed", 5, "--max-chars", n, "--report-every", 0, "--sample-every", 0,
            "--dtype", "float64", "--lanes", 1]   # the one-lane model _annealed trains
    r = invoke(*args, *(["--anneal", anneal] if anneal else []))
    assert r.exit_code == 0, r.output
    fraction = DEFAULTS[cell].anneal if anneal is None else float(anneal)
    got = charstream.load(tmp_path / "m.npz")
    assert_same_model(got, _annealed(shakespeare, cell, fraction, n))
    if fraction:
        plain = _annealed(shakespeare, cell, 0.0, n)
        assert not np.array_equal(got.params["Why"], plain.params["Why"])


def test_rnn_keeps_min_char_rnn_constant_rate_by_default():
    assert DEFAULTS["rnn"].anneal == 0.0
    assert DEFAULTS["lstm"].anneal > 0 and DEFAULTS["gru"].anneal > 0


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "half"])
def test_bad_anneal_is_a_usage_error_and_no_model(tmp_path, value):
    r = invoke("train", "-", "--model", tmp_path / "m.npz", "--anneal", value, input="abc" * 50)
    assert r.exit_code == 2 and "--anneal" in r.stderr
    assert not (tmp_path / "m.npz").exists()
