"""Model construction, the generator, and the model file's round trip and refusals."""
import gc
import itertools
import json
import warnings
import zipfile

import numpy as np
import pytest

import charstream
from charstream import samplers
from helpers import assert_same_model


def test_fresh_model_matches_min_char_rnn_init():
    m = charstream.Model("abc", hidden_size=5, seed=11)
    rng = np.random.default_rng(11)
    np.testing.assert_array_equal(m.params["Wxh"], rng.standard_normal((5, 3)) * 0.01)
    np.testing.assert_array_equal(m.params["Whh"], rng.standard_normal((5, 5)) * 0.01)
    np.testing.assert_array_equal(m.params["Why"], rng.standard_normal((3, 5)) * 0.01)
    assert not m.params["bh"].any() and not m.params["by"].any()
    for k, v in m.params.items():
        assert v.dtype == np.float64 and v.flags.c_contiguous, k
    assert m.vocab == ("a", "b", "c")


def test_params_are_the_arrays_training_updates(shakespeare):
    m = charstream.Model(sorted(set(shakespeare)), hidden_size=8, seed=0)
    arrays = dict(m.params)
    list(charstream.Trainer(m).train([shakespeare[:200]]))
    for k, v in arrays.items():
        assert m.params[k] is v


@pytest.mark.parametrize("vocab, msg", [("aa", "distinct"), (["ab"], "single characters")])
def test_bad_vocab(vocab, msg):
    with pytest.raises(ValueError, match=msg):
        charstream.Model(vocab)


def test_generate_is_reproducible_and_unbounded(shakespeare):
    m = charstream.Model("", hidden_size=16, seed=0)
    list(charstream.Trainer(m).train([shakespeare[:3000]]))
    a = "".join(itertools.islice(m.generate("To be", random_seed=5), 10_000))
    b = "".join(itertools.islice(m.generate("To be", random_seed=5), 10_000))
    c = "".join(itertools.islice(m.generate("To be", random_seed=6), 10_000))
    assert a == b and a != c and len(a) == 10_000
    assert set(a) <= set(m.vocab)
    ch = next(m.generate())
    assert isinstance(ch, str) and len(ch) == 1


def test_generate_matches_the_oracle_sampling_distribution():
    """First sampled character from a seed follows the oracle's softmax."""
    m = charstream.Model("abcd", hidden_size=6, seed=3)
    for k in m.params:
        m.params[k][...] = np.random.default_rng(1).standard_normal(m.params[k].shape)
    h = np.zeros(6)
    m.kernel().step(m.encode("ab"), h)
    y = m.params["Why"] @ h + m.params["by"]
    p = np.exp(y) / np.exp(y).sum()
    firsts = [next(m.generate("ab", random_seed=s)) for s in range(4000)]
    freq = np.array([firsts.count(c) for c in "abcd"]) / 4000
    np.testing.assert_allclose(freq, p, atol=0.03)


def test_generate_does_not_touch_training_state(shakespeare):
    m = charstream.Model("", hidden_size=16, seed=0)
    list(charstream.Trainer(m).train([shakespeare[:1000]]))
    hprev, rng = m.state.hprev.copy(), m.rng.bit_generator.state
    "".join(itertools.islice(m.generate("a" if "a" in m.vocab else ""), 500))
    np.testing.assert_array_equal(m.state.hprev, hprev)
    assert m.rng.bit_generator.state == rng


def test_generate_refuses_bad_values():
    m = charstream.Model("ab", hidden_size=4)
    with pytest.raises(ValueError, match="temperature"):
        m.generate(temperature=0)
    with pytest.raises(ValueError, match="empty vocabulary"):
        charstream.Model("").generate()


class CountingKernel:
    """A model's kernel that counts the characters it samples (compiled draws and Python picks)."""

    def __init__(self, kernel):
        self.kernel, self.sampled, self.stepped = kernel, 0, 0

    def sample(self, h, u, out, *args):
        self.sampled += len(out)
        return self.kernel.sample(h, u, out, *args)

    def __getattr__(self, name):
        if name == "sample_lanes":   # LaneKernel's batched draw (Kernel has none: a batch loops on sample)
            def sample_lanes(h, u, out, *args):
                self.sampled += out.size
                return self.kernel.sample_lanes(h, u, out, *args)
            return sample_lanes if hasattr(self.kernel, name) else getattr(self.kernel, name)
        return getattr(self.kernel, name)

    def step(self, xs, h):
        self.stepped += len(xs)
        return self.kernel.step(xs, h)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("how", [{}, {"sampler": "greedy"}, {"top_k": 3}, {"top_p": 0.9}])
def test_generate_length_is_the_prefix_and_samples_no_more(shakespeare, monkeypatch, cell, how):
    m = charstream.Model(sorted(set(shakespeare[:2000])), hidden_size=8, seed=0, cell=cell)
    list(charstream.Trainer(m).train([shakespeare[:2000]]))
    endless = "".join(itertools.islice(m.generate("To", random_seed=3, **how), 700))
    made = []
    real = m.generation_kernel
    monkeypatch.setattr(m, "generation_kernel", lambda *a, **k: made.append(CountingKernel(real(*a, **k))) or made[-1])
    for n in (0, 1, 31, 32, 33, 96, 97, 700):
        text = "".join(itertools.islice(m.generate("To", random_seed=3, length=n, **how), n + 100))
        assert text == endless[:n]   # and it ends there (islice's bound: a length ignored fails, not hangs)
        k = made[-1]
        # compiled samplers draw exactly n; Python picks step each pick after the seed's 2 characters
        assert k.sampled + k.stepped - 2 == n, (n, k.sampled, k.stepped)
    blocks = list(itertools.islice(m.generate_blocks("To", random_seed=3, length=5000, first_block=32,
                                                     max_block=1024, **how), 100))
    assert "".join(blocks) == "".join(itertools.islice(m.generate("To", random_seed=3, **how), 5000))
    assert max(map(len, blocks)) <= (1024 if not how.get("top_p") else 256) and len(blocks[0]) == 32


def test_block_sizes():
    assert list(itertools.islice(samplers.block_sizes(32, 100), 5)) == [32, 64, 100, 100, 100]
    assert list(samplers.block_sizes(32, 4096, 0)) == []
    assert list(samplers.block_sizes(32, 4096, 100)) == [32, 64, 4]
    assert list(samplers.block_sizes(4, 8, 30)) == [4, 8, 8, 8, 2]
    assert list(samplers.block_sizes(32, 4096, 96)) == [32, 64]


@pytest.mark.parametrize("length", [-1, 1.5, True, "3"])
def test_generate_refuses_a_bad_length(length):
    m = charstream.Model("ab", hidden_size=4)
    with pytest.raises(ValueError, match="length must be a non-negative integer"):
        m.generate(length=length)


def test_unknown_seed_characters_are_skipped_with_a_warning():
    m = charstream.Model("ab", hidden_size=4, seed=0)
    with pytest.warns(charstream.CharstreamWarning, match="'z'"):
        g = m.generate("azb", random_seed=1)
    assert "".join(itertools.islice(g, 50)) == "".join(itertools.islice(m.generate("ab", random_seed=1), 50))


def test_evaluate_of_a_fresh_model_is_about_log_v(shakespeare):
    m = charstream.Model(sorted(set(shakespeare)), seed=0)
    assert m.evaluate(shakespeare[:2000]) == pytest.approx(np.log(m.vocab_size), rel=0.01)


def test_save_load_is_the_identity(tmp_path, shakespeare):
    m = charstream.Model("", hidden_size=12, seed=0)
    for r in charstream.Trainer(m, seq_length=13, learning_rate=0.05).train([shakespeare[:2000]]):
        pass
    m.save(tmp_path / "m.npz")
    back = charstream.load(tmp_path / "m.npz")
    assert_same_model(back, m)
    assert back.state.seq_length == 13 and back.state.learning_rate == 0.05
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        assert {"Wxh", "Whh", "Why", "bh", "by", "vocab", "meta"} <= set(z.files)


def test_saved_then_resumed_equals_uninterrupted(tmp_path, shakespeare):
    text = shakespeare[:3000] + "ÆØÅ" + shakespeare[3000:4000]
    ref = charstream.Model("", hidden_size=12, seed=1)
    list(charstream.Trainer(ref).train([text]))
    m = charstream.Model("", hidden_size=12, seed=1)
    list(charstream.Trainer(m).train([text[:1013]]))
    m.save(tmp_path / "m.npz")
    m = charstream.load(tmp_path / "m.npz")
    list(charstream.Trainer(m).train([text[1013:]]))
    assert_same_model(m, ref)


def _write(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_refusals(tmp_path):
    m = charstream.Model("ab", hidden_size=4, seed=0)
    good = tmp_path / "good.npz"
    m.save(good)
    cases = {}
    (tmp_path / "trunc.npz").write_bytes(good.read_bytes()[:300])
    cases["trunc.npz"] = "not a charstream model|corrupt"
    (tmp_path / "random.npz").write_bytes(np.random.default_rng(0).bytes(5000))
    cases["random.npz"] = "not a charstream model"
    with zipfile.ZipFile(tmp_path / "foreign.npz", "w") as z:
        z.writestr("hello.txt", "hi")
    cases["foreign.npz"] = "not a charstream model"
    _write(tmp_path / "pickled.npz", meta=np.array([{"a": 1}], dtype=object))
    cases["pickled.npz"] = "pickled"
    with np.load(good) as z:
        arrays = dict(z)
    newer = dict(arrays, meta=np.array(str(arrays["meta"]).replace('"format_version": 2', '"format_version": 99')))
    _write(tmp_path / "newer.npz", **newer)
    cases["newer.npz"] = "newer charstream"
    _write(tmp_path / "shape.npz", **dict(arrays, Whh=np.zeros((3, 3))))
    cases["shape.npz"] = r"Whh must be \(4, 4\)"
    _write(tmp_path / "nan.npz", **dict(arrays, by=np.array([np.nan, 0.0])))
    cases["nan.npz"] = "NaN"
    cases["missing.npz"] = "no such model file"
    for name, msg in cases.items():
        with warnings.catch_warnings(record=True) as caught:   # a refused file is closed, not left to gc
            warnings.simplefilter("always")
            with pytest.raises(charstream.ModelFileError, match=msg) as e:
                charstream.load(tmp_path / name)
            gc.collect()
        assert str(e.value).startswith(str(tmp_path / name) + ": ")
        assert "\n" not in str(e.value)
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)], name


def test_pickled_file_runs_no_code(tmp_path):

    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    arr = np.empty(1, dtype=object)
    arr[0] = Boom()
    with open(tmp_path / "evil.npz", "wb") as f:
        np.savez(f, meta=arr)
    with pytest.raises(charstream.ModelFileError):
        charstream.load(tmp_path / "evil.npz")
    assert not (tmp_path / "pwned").exists()


def test_a_version_1_file_loads_as_one_rnn_layer_and_says_its_version(tmp_path):
    m = charstream.Model("abc", hidden_size=4, seed=0)
    list(charstream.Trainer(m, seq_length=3).train(["abcabcabca"]))
    m.save(tmp_path / "v2.npz")
    with np.load(tmp_path / "v2.npz") as z:
        arrays = dict(z)
    meta = json.loads(str(arrays["meta"]))
    assert (meta["format_version"], meta["cell"], meta["layers"]) == (2, "rnn", 1)
    for k in ("cell", "layers"):
        del meta[k]
    meta["format_version"] = 1                     # what charstream 0.1 wrote
    _write(tmp_path / "v1.npz", **dict(arrays, meta=np.array(json.dumps(meta))))
    old = charstream.load(tmp_path / "v1.npz")
    assert (old.cell, old.layers, old.file_format_version) == ("rnn", 1, 1)
    for k, v in m.params.items():
        np.testing.assert_array_equal(old.params[k], v)
    old.save(tmp_path / "v1.npz")                  # saving writes the current version
    assert charstream.load(tmp_path / "v1.npz").file_format_version == 2


def test_one_name_per_meaning_with_the_old_spellings_kept():
    """prompt is the text that primes the state, random_seed the seed of a call's random numbers;
    the old spellings (generate(seed=), Model(seed=)) mean the same, and both at once is an error."""
    a = charstream.Model("abc ", hidden_size=6, random_seed=4)
    b = charstream.Model("abc ", hidden_size=6, seed=4)
    assert all((a.params[k] == b.params[k]).all() for k in a.params)
    assert "".join(a.generate(prompt="ab", random_seed=1, length=50)) == \
        "".join(a.generate(seed="ab", random_seed=1, length=50)) == "".join(a.generate("ab", 1.0, 1, length=50))
    with pytest.raises(TypeError, match="give random_seed or its old spelling seed, not both"):
        charstream.Model("ab", random_seed=1, seed=1)
    with pytest.raises(TypeError, match="give prompt or its old spelling seed, not both"):
        a.generate(prompt="a", seed="b")
    assert charstream.Trainer(a).sample(30, prompt="ab", random_seed=3) == \
        charstream.Trainer(a).sample(30, seed="ab", random_seed=3)


def test_the_facts_read_the_dtype_of_a_model_that_has_one():
    m = charstream.Model("ab", hidden_size=4, cell="gru", layers=2)
    f = charstream.facts(m)
    assert (f["cell"], f["layers"], f["dtype"], f["hidden_size"], f["vocab_size"]) == ("gru", 2, "float64", 4, 2)
    assert f["parameters"] == sum(v.size for v in m.params.values()) and f["format_version"] is None
    m32 = charstream.Model("ab", hidden_size=4, cell="gru", layers=2, dtype="float32")
    assert charstream.facts(m32)["dtype"] == "float32"
