"""Samplers: greedy, top-k, top-p and temperature against numpy, on the API and the command line."""
import itertools

import numpy as np
import pytest
from click.testing import CliRunner

import charstream
from charstream import samplers
from charstream.cli import main
from helpers import invoke


@pytest.fixture(scope="module")
def model():
    m = charstream.Model("abcdefgh", hidden_size=6, seed=3)
    rng = np.random.default_rng(1)
    for k in m.params:
        m.params[k][...] = rng.standard_normal(m.params[k].shape)
    return m


def _probs(m, seed, temperature=1.0):
    """The oracle: softmax((Why h + by) / T) after priming a zero state with seed."""
    h = np.zeros(m.hidden_size)
    m.kernel().step(m.encode(seed), h)
    y = (m.params["Why"] @ h + m.params["by"]) / temperature
    p = np.exp(y - y.max())
    return p / p.sum(), h


def _take(gen, n):
    return "".join(itertools.islice(gen, n))


def test_greedy_is_argmax_at_every_step(model):
    out = _take(model.generate("ab", sampler="greedy"), 40)
    text = "ab"
    for ch in out:
        p, _ = _probs(model, text)
        assert ch == model.vocab[int(np.argmax(p))]
        text += ch
    assert _take(model.generate("ab", top_k=1, random_seed=5), 40) == out
    assert _take(model.generate("ab", top_p=1e-9, random_seed=6), 40) == out


def test_the_compiled_greedy_path_picks_what_the_python_path_picks(model):
    fast = _take(model.generate("abc", sampler="greedy"), 1500)
    slow = _take(model.generate("abc", sampler=lambda p, rng: int(np.argmax(p))), 1500)
    assert fast == slow and len(set(fast)) > 1


@pytest.mark.parametrize("kw, k", [(dict(top_k=5), 5), (dict(sampler="top-k"), 40), (dict(top_k=1), 1),
                                   (dict(sampler=samplers.TopK(3), temperature=0.7), 3),
                                   (dict(top_k=10, temperature=1.8), 10), (dict(top_k=10 ** 6), 10 ** 6)])
def test_the_compiled_top_k_path_draws_what_the_python_path_draws(model, kw, k):
    def slow_pick(probs, rng):   # a callable: the Python path, one character at a time
        return samplers.temperature(samplers.cut_top_k(probs.copy(), k), rng)
    T = kw.get("temperature", 1.0)
    fast = _take(model.generate("abc", random_seed=4, **kw), 1500)
    slow = _take(model.generate("abc", random_seed=4, sampler=slow_pick, temperature=T), 1500)
    assert fast == slow
    if k == 1:
        assert fast == _take(model.generate("abc", sampler="greedy"), 1500)
    else:
        assert len(set(fast)) > 1


def test_the_python_path_draws_what_the_compiled_path_draws(model):
    """Same uniforms, same inverse CDF: a callable that only draws equals the default fast path."""
    def draw(probs, rng):
        return samplers.temperature(probs, rng)
    for T in (0.5, 1.0, 1.7):
        fast = _take(model.generate("abc", temperature=T, random_seed=9), 1500)
        slow = _take(model.generate("abc", temperature=T, random_seed=9, sampler=draw), 1500)
        assert fast == slow


def test_cuts_against_numpy():
    p = np.array([0.05, 0.4, 0.1, 0.3, 0.15])
    np.testing.assert_allclose(samplers.cut_top_k(p.copy(), 2), [0, 0.4 / 0.7, 0, 0.3 / 0.7, 0])
    np.testing.assert_allclose(samplers.cut_top_k(p.copy(), 9), p)
    np.testing.assert_allclose(samplers.cut_top_p(p.copy(), 0.7), [0, 0.4 / 0.7, 0, 0.3 / 0.7, 0])
    np.testing.assert_allclose(samplers.cut_top_p(p.copy(), 0.71), [0, 0.4 / 0.85, 0, 0.3 / 0.85, 0.15 / 0.85])
    np.testing.assert_allclose(samplers.cut_top_p(p.copy(), 1.0), p)
    np.testing.assert_allclose(samplers.cut_top_p(p.copy(), 0.01), [0, 1, 0, 0, 0])


@pytest.mark.parametrize("kw, cut", [
    (dict(top_k=3), lambda p: samplers.cut_top_k(p, 3)),
    (dict(sampler="top-k"), lambda p: samplers.cut_top_k(p, 40)),
    (dict(sampler=samplers.TopK(2)), lambda p: samplers.cut_top_k(p, 2)),
    (dict(top_p=0.6), lambda p: samplers.cut_top_p(p, 0.6)),
    (dict(sampler=samplers.TopP(0.5), temperature=0.8), lambda p: samplers.cut_top_p(p, 0.5)),
    (dict(top_k=4, top_p=0.8, sampler="greedy"), lambda p: np.eye(len(p))[np.argmax(p)]),
])
def test_first_character_follows_the_cut_distribution(model, kw, cut):
    p, _ = _probs(model, "abc", kw.get("temperature", 1.0))
    want = cut(p.copy())
    firsts = [next(model.generate("abc", random_seed=s, **kw)) for s in range(1500)]
    freq = np.array([firsts.count(c) for c in model.vocab]) / len(firsts)
    assert set(firsts) <= {model.vocab[i] for i in np.flatnonzero(want)}
    np.testing.assert_allclose(freq, want, atol=0.05)


def test_samplers_are_reproducible(model):
    for kw in (dict(top_k=3), dict(top_p=0.9), dict(sampler="top-p")):
        assert _take(model.generate("a", random_seed=2, **kw), 300) == _take(model.generate("a", random_seed=2, **kw), 300)


@pytest.mark.parametrize("kw, msg", [
    (dict(top_k=0), "top_k must be a positive integer"),
    (dict(top_k=2.5), "top_k must be a positive integer"),
    (dict(top_p=0), r"top_p must be a number in \(0, 1\]"),
    (dict(top_p=2), r"top_p must be a number in \(0, 1\]"),
    (dict(top_p=float("nan")), r"top_p must be a number"),
])
def test_bad_values_are_refused(model, kw, msg):
    with pytest.raises(ValueError, match=msg):
        model.generate(**kw)
    with pytest.raises(TypeError, match="sampler must be a name or a callable"):
        model.generate(sampler=3)
    with pytest.raises(charstream.CharstreamError, match="no sampler named 'nope'"):
        model.generate(sampler="nope")


def test_priming_with_unseen_characters_warns_once_and_never_crashes(model):
    with pytest.warns(charstream.CharstreamWarning, match="never seen") as w:
        out = _take(model.generate("a春bЖ🎉", sampler="greedy"), 20)
    assert len(w) == 1 and out == _take(model.generate("ab", sampler="greedy"), 20)
    with pytest.warns(charstream.CharstreamWarning):
        assert len(_take(model.generate("春春春", top_p=0.9), 20)) == 20


@pytest.fixture
def saved(tmp_path, model):
    model.save(tmp_path / "s.npz")
    return str(tmp_path / "s.npz")


def test_cli_samplers(saved, model):
    def gen(*args):
        r = CliRunner().invoke(main, ["generate", "--model", saved, "--seed", "ab", "--length", "60", *args])
        assert r.exit_code == 0, r.stderr
        return r.stdout
    greedy = gen("--sampler", "greedy")
    assert greedy == "ab" + _take(model.generate("ab", sampler="greedy"), 60)
    assert gen("--top-k", "1", "--random-seed", "3") == greedy
    assert gen("--top-p", "0.5", "--random-seed", "4") == \
        "ab" + _take(model.generate("ab", top_p=0.5, random_seed=4), 60)
    assert gen("--temperature", "0.7", "--top-k", "3", "--random-seed", "4") == \
        "ab" + _take(model.generate("ab", temperature=0.7, top_k=3, random_seed=4), 60)
    assert gen("--sampler", "top-p", "--random-seed", "1") == gen("--top-p", "0.9", "--random-seed", "1")


@pytest.mark.parametrize("args, msg", [
    (["--top-p", "2"], "Error: Invalid value for '--top-p': 2.0 is not in the range 0<x<=1."),
    (["--top-p", "0"], "Error: Invalid value for '--top-p': 0.0 is not in the range 0<x<=1."),
    (["--top-k", "0"], "Error: Invalid value for '--top-k': 0 is not in the range x>=1."),
    (["--sampler", "bogus"], "Error: Invalid value for '--sampler': no sampler named 'bogus' "
                             "(known: temperature, greedy, top-k, top-p)"),
])
def test_cli_refuses_bad_sampler_values(saved, args, msg):
    r = CliRunner().invoke(main, ["generate", "--model", saved, *args])
    assert r.exit_code == 2 and r.stderr.strip().splitlines()[-1] == msg


# -- named cuts and numbers of any numeric type (moved from test_qa.py and test_review.py)

def _oracle_cut(top_k=None, top_p=None):
    """A sampler written independently of charstream.samplers: keep the top_k most probable (or the
    fewest most probable whose mass reaches top_p), renormalise, draw by inverse CDF at one uniform.
    `.kept` records how many characters each step kept."""
    def pick(probs, rng):
        order = sorted(range(len(probs)), key=lambda i: -probs[i])
        if top_k is not None:
            keep = order[:top_k]
        else:
            keep, mass = [], 0.0
            for i in order:
                keep.append(i)
                mass += probs[i]
                if mass >= top_p:
                    break
        cut = np.zeros(len(probs))
        cut[keep] = probs[keep]
        c = np.cumsum(cut / cut.sum())
        above = c > rng.random() * c[-1]
        pick.kept.append(len(keep))
        return int(np.argmax(above)) if above.any() else len(c) - 1
    pick.kept = []
    return pick


@pytest.mark.parametrize("name, kw", [("top-k", {"top_k": 2}), ("top-k", {"top_k": 5}),
                                      ("top-p", {"top_p": 0.3}), ("top-p", {"top_p": 0.8})])
def test_the_named_cut_sampler_takes_the_cut_it_is_given(ja_model, name, kw):
    """sampler="top-k" with top_k=K draws what an independent top-K sampler draws (not top-k's
    default of 40, which keeps all 27 characters of this model); the same for top-p."""
    _, m = ja_model
    got = "".join(itertools.islice(m.generate("吾輩", sampler=name, random_seed=5, **kw), 200))
    oracle = _oracle_cut(**kw)
    want = "".join(itertools.islice(m.generate("吾輩", sampler=oracle, random_seed=5), 200))
    uncut = "".join(itertools.islice(m.generate("吾輩", random_seed=5), 200))
    assert got == want
    assert max(oracle.kept) < m.vocab_size and got != uncut   # the cut removed characters at every step


@pytest.mark.parametrize("args, msg", [
    (["--temperature", "inf"], "Error: Invalid value for '--temperature': 'inf' is not a finite number."),
    (["--temperature", "nan"], "Error: Invalid value for '--temperature': 'nan' is not a finite number."),
    (["--top-p", "nan"], "Error: Invalid value for '--top-p': 'nan' is not a finite number."),
])
def test_non_finite_sampler_values_are_refused_like_any_bad_option(ja_model, args, msg):
    r = invoke("generate", "--model", ja_model[0], "--length", "5", *args)
    assert r.exit_code == 2 and r.stderr.strip().splitlines()[-1] == msg


def test_numpy_scalars_are_numbers_too(ja_model):
    _, m = ja_model
    a = "".join(itertools.islice(m.generate("吾輩", temperature=np.float32(0.5), top_p=np.float32(0.75),
                                            top_k=np.int64(5), random_seed=1), 50))
    b = "".join(itertools.islice(m.generate("吾輩", temperature=float(np.float32(0.5)),
                                            top_p=float(np.float32(0.75)), top_k=5, random_seed=1), 50))
    assert a == b
    assert charstream.Trainer(m, learning_rate=np.float32(0.05)).learning_rate == float(np.float32(0.05))
