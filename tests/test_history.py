"""The training curve a model keeps: bounded, evenly thinned, each point the exact mean of its
chunks (against a numpy oracle), resumed exactly, shown by `info`, and dropped with a warning when
a file holds a malformed one."""
import json
import re

import numpy as np
import pytest

import charstream
from charstream.history import FIRST_STEP, MAX_POINTS, History, step_for
from helpers import invoke, without_seconds


def _feed(history, losses, T, start=0):
    chars = start
    for loss in losses:
        chars += T
        history.add(chars, float(loss), T)
    return chars


def _oracle_means(points, losses, T, start=0):
    """Each point's nats/char computed from the chunk losses it covers."""
    ends = start + T * np.arange(1, len(losses) + 1)
    out, prev = [], start
    for p in points:
        covered = (ends > prev) & (ends <= p[0])
        out.append(losses[covered].sum() / (T * covered.sum()))
        prev = p[0]
    return out


@pytest.mark.parametrize("T", [25, 100, 500])   # chunks shorter than FIRST_STEP, as they are in practice
def test_bounded_even_and_exact_means_over_a_long_run(T):
    rng = np.random.default_rng(0)
    n = 4_000_000 // T
    losses = rng.uniform(1, 4, n) * T
    h, sizes = History(), []
    chars = 0
    for i in range(0, n, 1000):
        chars = _feed(h, losses[i:i + 1000], T, chars)
        sizes.append(len(h.points))
    assert max(sizes) <= MAX_POINTS and sizes[-1] >= MAX_POINTS // 2
    step = step_for(chars)
    assert step > FIRST_STEP   # it thinned, more than once
    xs = np.array([p[0] for p in h.points])
    gaps = np.diff(xs)
    assert (np.abs(gaps - gaps.mean()) < max(T, 1) + 1).all() and gaps.mean() == pytest.approx(step, rel=0.05)
    assert [p[1] for p in h.points] == pytest.approx(_oracle_means(h.points, losses, T), rel=1e-12)
    covered = h.points[-1][0]
    assert h.chars == chars - covered and h.nats == pytest.approx(losses[covered // T:].sum())


def test_a_young_model_has_a_point_every_first_step_characters():
    h = History()
    _feed(h, [50.0] * 400, 25)   # 10,000 characters
    assert [p[0] for p in h.points] == [1025, 2050, 3075, 4100, 5125, 6150, 7175, 8200, 9225]
    assert all(p[1] == 2.0 for p in h.points)


def test_a_resumed_run_extends_the_curve_exactly(tmp_path, shakespeare):
    path = tmp_path / "m.npz"
    charstream.train([[shakespeare[:9000]]], model=path, hidden_size=8, random_seed=2)
    charstream.train([[shakespeare[9000:20000]]], model=path)
    whole = charstream.Model("", hidden_size=8, random_seed=2)
    charstream.train([[shakespeare[:20000]]], model=whole)
    m = charstream.load(path)
    assert len(m.history.points) >= 15
    assert without_seconds(m.history.points) == without_seconds(whole.history.points)
    assert (m.history.nats, m.history.chars) == (whole.history.nats, whole.history.chars)
    seconds = [p[2] for p in m.history.points]
    assert seconds == sorted(seconds) and m.history.seconds >= seconds[-1]


def test_info_shows_the_curve_and_json_gives_the_points(tmp_path, shakespeare):
    path = tmp_path / "m.npz"
    charstream.train([[shakespeare[:12000]]], model=path, hidden_size=8)
    m = charstream.load(path)
    d = json.loads(invoke("info", "--model", path, "--json").stdout)
    assert d["history"] == m.history.points and len(d["history"]) == 11
    text = invoke("info", "--model", path).stdout
    spark = re.search(r"^curve          ([▁▂▃▄▅▆▇█]+)$", text, re.M)
    assert spark and len(spark.group(1)) == 11
    bits = [p[1] / np.log(2) for p in m.history.points]
    assert spark.group(1)[int(np.argmax(bits))] == "█" and spark.group(1)[int(np.argmin(bits))] == "▁"
    assert f"({len(bits)} points" in text
    fresh = tmp_path / "new.npz"
    charstream.Model("ab", hidden_size=4).save(fresh)
    assert "curve          none yet" in invoke("info", "--model", fresh).stdout


@pytest.mark.parametrize("history,history_open", [
    ("junk", [0.0, 0, 0.0]),
    ([[10, 1.0, 0.1], [5, 1.0, 0.2]], [0.0, 0, 0.0]),        # characters go back
    ([[10, float("nan"), 0.1]], [0.0, 0, 0.0]),
    ([[10, 1.0]], [0.0, 0, 0.0]),                            # a column short
    ([[10 ** 9, 1.0, 0.1]], [0.0, 0, 0.0]),                  # beyond the characters trained
    ([[10, 1.0, 0.1]] * (MAX_POINTS + 1), [0.0, 0, 0.0]),
    ([], "junk"),
    ([], [0.0, -1, 0.0]),
])
def test_a_malformed_history_is_dropped_with_a_warning_and_the_model_loads(tmp_path, shakespeare, history,
                                                                            history_open):
    path = tmp_path / "m.npz"
    charstream.train([[shakespeare[:3000]]], model=path, hidden_size=8)
    good = charstream.load(path)
    with np.load(path) as z:
        arrays = dict(z)
    meta = json.loads(str(arrays["meta"]))
    meta.update(history=history, history_open=history_open)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    with pytest.warns(charstream.CharstreamWarning, match=f"{re.escape(str(path))}: its training history is "
                                                          r"malformed \(.*\): dropped, the model is intact"):
        m = charstream.load(path)
    assert m.history.points == [] and m.history.chars == 0
    assert m.state.chars_trained == good.state.chars_trained and (m.params["Why"] == good.params["Why"]).all()
    r = invoke("info", "--model", path)
    assert r.exit_code == 0 and "Warning: " in r.stderr and "training history is malformed" in r.stderr


def test_a_file_without_a_history_loads_with_an_empty_one(tmp_path):
    m = charstream.Model("ab", hidden_size=4)
    meta, arrays = m.to_arrays()
    del meta["history"], meta["history_open"]
    back = charstream.Model.from_arrays(dict(meta, format_version=2), arrays)
    assert back.history.points == [] and back.history.seconds == 0.0
