"""The open vocabulary: first-seen growth, the cap and its unknown symbol, fixed vocabularies, scripts."""
import itertools
import warnings

import numpy as np
import pytest

import charstream
from charstream.errors import CharstreamWarning
from charstream.vocab import UNK, Vocab
from helpers import assert_same_model, invoke

JAPANESE = "春はあけぼの。やうやう白くなりゆく山ぎは、すこしあかりて、紫だちたる雲のほそくたなびきたる。\n"
RUSSIAN = "Мороз и солнце; день чудесный! Ещё ты дремлешь, друг прелестный — пора, красавица, проснись.\n"


def _train(model, texts, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", charstream.CharstreamWarning)
        return list(charstream.Trainer(model, **kw).train(texts))


def _random_codepoints(n, seed=0):
    cps = np.random.default_rng(seed).integers(0x20, 0x110000, n)
    cps = cps[(cps < 0xD800) | (cps > 0xDFFF)]            # no lone surrogates
    return "".join(map(chr, cps))


def test_growth_is_first_seen_order_for_any_script(multilingual):
    m = charstream.Model("", hidden_size=8, seed=0)
    recs = _train(m, [multilingual])
    assert m.vocab == tuple(dict.fromkeys(multilingual))
    assert all(np.isfinite(r.loss) for r in recs)


def test_the_cap_maps_later_characters_to_u_fffd_in_the_last_slot():
    text = "abcabc" * 5 + "defgh" * 6 + "abc" * 10
    m = charstream.Model("", hidden_size=8, seed=0, max_vocab=5)
    with pytest.warns(charstream.CharstreamWarning, match="max_vocab=5") as w:
        recs = list(charstream.Trainer(m, seq_length=4).train([text]))
    assert len([x for x in w if "max_vocab" in str(x.message)]) == 1
    assert m.vocab == ("a", "b", "c", "d", UNK)
    assert all(np.isfinite(r.loss) for r in recs) and max(r.vocab_size for r in recs) == 5
    idx = m.encode("aezh")                 # priming reads past-cap characters as U+FFFD too
    assert idx.tolist() == [0, 4, 4, 4]


def test_random_code_points_cannot_exhaust_memory():
    text = _random_codepoints(20_000)
    m = charstream.Model("", hidden_size=8, seed=0, max_vocab=300)
    recs = _train(m, [text[i:i + 999] for i in range(0, len(text), 999)])
    assert m.vocab_size == 300 and m.vocab[-1] == UNK
    assert m.vocab[:299] == tuple(dict.fromkeys(text))[:299]
    assert m.params["Wxh"].shape == (8, 300)
    assert all(np.isfinite(r.loss) for r in recs)


@pytest.mark.parametrize("max_vocab", [1, 2, 7, 60])
def test_capped_growth_is_a_function_of_the_text_alone(max_vocab, tmp_path, multilingual):
    text = (multilingual + _random_codepoints(300, seed=1)) * 2
    ref = charstream.Model("", hidden_size=6, seed=2, max_vocab=max_vocab)
    ref_losses = [r.loss for r in _train(ref, [text], seq_length=9)]
    m = charstream.Model("", hidden_size=6, seed=2, max_vocab=max_vocab)
    losses = [r.loss for r in _train(m, [text[:50]], seq_length=9)]
    m.save(tmp_path / "m.npz")                          # resume in between: the lookup table is rebuilt
    m = charstream.load(tmp_path / "m.npz")
    assert m.max_vocab == max_vocab
    rest = text[50:]
    losses += [r.loss for r in _train(m, [rest[i:i + 13] for i in range(0, len(rest), 13)])]
    assert losses == ref_losses and all(np.isfinite(losses))
    assert_same_model(m, ref)
    assert m.vocab_size <= max_vocab


def test_invalid_utf8_and_past_cap_characters_share_one_symbol(tmp_path):
    from charstream.sources import read_stream
    import io
    data = ("abcd" * 10).encode() + b"\xff" + ("xyz" * 10).encode()
    m = charstream.Model("", hidden_size=4, seed=0, max_vocab=5)
    with pytest.warns(charstream.CharstreamWarning):
        list(charstream.Trainer(m, seq_length=5).train(read_stream(io.BytesIO(data), "bytes")))
    assert m.vocab == ("a", "b", "c", "d", UNK)


def test_a_fixed_vocabulary_never_grows():
    m = charstream.Model("ab ", hidden_size=4, seed=0, fixed_vocab=True)
    Wxh = m.params["Wxh"].copy()
    with pytest.warns(charstream.CharstreamWarning, match="outside the fixed vocabulary.*'x'") as w:
        recs = list(charstream.Trainer(m, seq_length=3).train(["ab xab", "xy ab " * 20]))
    assert len(w) == 1
    assert m.vocab == ("a", "b", " ") and m.params["Wxh"].shape == Wxh.shape
    assert recs and all(np.isfinite(r.loss) for r in recs)
    assert m.state.chars_seen == 6 + 6 * 20
    assert sum(r.seq_length for r in recs) + m.state.tail.size == (6 + 6 * 20) - 1 - 2 * 20


def test_a_fixed_vocabulary_with_u_fffd_maps_outsiders_to_it(tmp_path):
    m = charstream.Model("ab" + UNK, hidden_size=4, seed=0, fixed_vocab=True)
    recs = _train(m, ["abzabq" * 10], seq_length=5)
    assert m.vocab == ("a", "b", UNK) and len(recs) == 11
    m.save(tmp_path / "f.npz")
    back = charstream.load(tmp_path / "f.npz")
    assert back.fixed_vocab and back.vocab == m.vocab
    assert back.encode("azb").tolist() == [0, 2, 1]


def test_english_then_japanese_grows_and_generates_japanese(shakespeare, tmp_path):
    m = charstream.Model("", hidden_size=32, seed=0)
    _train(m, [shakespeare[:2000]])
    english = m.vocab_size
    m.save(tmp_path / "en.npz")
    m = charstream.load(tmp_path / "en.npz")
    recs = _train(m, [JAPANESE * 60], learning_rate=0.1)
    assert m.vocab_size == english + len(set(JAPANESE) - set(shakespeare[:2000]))
    assert all(np.isfinite(r.loss) for r in recs)
    out = "".join(itertools.islice(m.generate("春は", sampler="greedy"), 40))
    assert sum(c in JAPANESE for c in out) >= 30, out


def test_russian_generates_russian():
    m = charstream.Model("", hidden_size=32, seed=0)
    _train(m, [RUSSIAN * 50])
    out = "".join(itertools.islice(m.generate("Мороз", temperature=0.5, random_seed=0), 60))
    assert sum(c in RUSSIAN for c in out) == len(out)
    assert sum("а" <= c <= "я" for c in out) >= 20, out


def test_vocab_arguments_are_checked():
    with pytest.raises(ValueError, match="max_vocab"):
        charstream.Model("", max_vocab=0)
    with pytest.raises(ValueError, match="more than max_vocab"):
        charstream.Model("abc", max_vocab=2)
    m = charstream.Model("abc", hidden_size=4)
    with pytest.raises(ValueError, match="below the model's 3"):
        m.max_vocab = 2
    m.max_vocab = 3
    assert Vocab("abc", 3).closed and not Vocab("ab" + UNK, 3).closed


def test_files_without_a_cap_load_with_the_default(tmp_path):
    import json
    m = charstream.Model("ab", hidden_size=4, seed=0)
    m.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        arrays = dict(z)
    meta = json.loads(str(arrays["meta"]))
    del meta["max_vocab"], meta["fixed_vocab"]
    with open(tmp_path / "old.npz", "wb") as f:
        np.savez(f, **dict(arrays, meta=np.array(json.dumps(meta))))
    old = charstream.load(tmp_path / "old.npz")
    assert old.max_vocab == charstream.vocab.DEFAULT_MAX_VOCAB and not old.fixed_vocab


def test_cli_max_vocab_is_saved_and_can_be_raised_not_lowered_below_v(tmp_path):
    path = str(tmp_path / "c.npz")
    r = invoke("train", "-", "--model", path, "--hidden-size", "4", "--max-vocab", "6",
             input="abcdefghij" * 20)
    assert r.exit_code == 0, r.stderr
    assert r.stderr.count("Warning: the vocabulary is full (max_vocab=6)") == 1
    m = charstream.load(path)
    assert m.max_vocab == 6 and m.vocab == ("a", "b", "c", "d", "e", UNK)
    r = invoke("train", "-", "--model", path, "--max-vocab", "3", input="abc" * 20)
    assert r.exit_code == 2 and "Invalid value for --max-vocab" in r.stderr and "below the model's 6" in r.stderr
    assert invoke("train", "-", "--model", path, "--max-vocab", "8", input="xyz" * 20).exit_code == 0
    m = charstream.load(path)          # one more character joins (the last slot stays U+FFFD's)
    assert m.max_vocab == 8 and m.vocab_size == 7 and m.vocab[:6] == ("a", "b", "c", "d", "e", UNK)
    new = str(tmp_path / "d.npz")
    assert invoke("train", "-", "--model", new, "--hidden-size", "4", input="abc" * 20).exit_code == 0
    assert charstream.load(new).max_vocab == charstream.vocab.DEFAULT_MAX_VOCAB


def test_cli_fixed_vocab(tmp_path):
    path = str(tmp_path / "f.npz")
    r = invoke("train", "-", "--model", path, "--hidden-size", "4", "--vocab", "ab ", "--fixed-vocab",
             input="ab ba xyz " * 20)
    assert r.exit_code == 0, r.stderr
    assert r.stderr.count("Warning: characters outside the fixed vocabulary are skipped: 'x', 'y', 'z'") == 1
    m = charstream.load(path)
    assert m.vocab == ("a", "b", " ") and m.fixed_vocab
    assert invoke("train", "-", "--model", path, input="abc" * 20).exit_code == 0
    assert charstream.load(path).vocab == ("a", "b", " ")          # still fixed: the file remembers
    assert invoke("train", "-", "--model", path, "--open-vocab", input="abc" * 20).exit_code == 0
    assert charstream.load(path).vocab == ("a", "b", " ", "c") and not charstream.load(path).fixed_vocab
    r = invoke("train", "-", "--model", str(tmp_path / "g.npz"), "--vocab", "abc", "--max-vocab", "2", input="abc")
    assert r.exit_code == 2 and "more than max_vocab=2" in r.stderr
    r = invoke("train", "-", "--model", str(tmp_path / "h.npz"), "--fixed-vocab", input="abc")
    assert r.exit_code == 2 and "needs its characters: give --vocab CHARS" in r.stderr
    assert not (tmp_path / "h.npz").exists()
    full = charstream.Model("ab", hidden_size=4, seed=0, max_vocab=2)
    with pytest.warns(charstream.CharstreamWarning, match=r"outside the full vocabulary \(it has no U\+FFFD\)"):
        list(charstream.Trainer(full).train(["abc" * 20]))
    assert full.vocab == ("a", "b")


def test_cli_english_then_japanese_then_generates_japanese(tmp_path, shakespeare):
    path = str(tmp_path / "ej.npz")
    (tmp_path / "en.txt").write_text(shakespeare[:2000], encoding="utf-8")
    (tmp_path / "ja.txt").write_bytes((JAPANESE * 60).encode("utf-8"))
    assert invoke("train", str(tmp_path / "en.txt"), "--model", path, "--hidden-size", "32",
                "--random-seed", "0").exit_code == 0
    english = charstream.load(path).vocab
    r = invoke("train", str(tmp_path / "ja.txt"), "--model", path)
    assert r.exit_code == 0 and "Warning" not in r.stderr
    m = charstream.load(path)
    assert m.vocab[:len(english)] == english and set(JAPANESE) <= set(m.vocab)
    r = invoke("generate", "--model", path, "--seed", "春は", "--length", "40", "--sampler", "greedy")
    assert r.exit_code == 0
    out = r.stdout[len("春は"):]
    assert len(out) == 40 and sum(c in JAPANESE for c in out) >= 30, out


# -- invalid bytes and surrogates read as U+FFFD; reopening the vocabulary (moved from test_qa.py and test_review.py)

def test_surrogate_escaped_bytes_train_as_u_fffd_like_the_byte_sources():
    escaped = "caf\udce9 ok, na\udcefve " * 8          # b"caf\xe9 ..." read with surrogateescape
    replaced = escaped.replace("\udce9", "\ufffd").replace("\udcef", "\ufffd")
    a, b = charstream.Model("", hidden_size=8, seed=0), charstream.Model("", hidden_size=8, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        la = [r.loss for r in charstream.Trainer(a).train([escaped[:30], escaped[30:]])]
    assert [str(w.message) for w in caught if issubclass(w.category, CharstreamWarning)] == [
        "the text has lone surrogates (bytes that were not UTF-8, decoded with "
        "errors='surrogateescape'?): read as U+FFFD"]
    lb = [r.loss for r in charstream.Trainer(b).train([replaced])]
    assert la == lb and a.vocab == b.vocab and "\ufffd" in a.vocab
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in a.vocab)


def test_a_seed_with_invalid_bytes_reads_them_as_u_fffd():
    m = charstream.Model("", hidden_size=8, seed=0)
    list(charstream.Trainer(m).train(["caf\ufffd caf\ufffd " * 6]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no "never seen" warning: it is U+FFFD
        got = "".join(itertools.islice(m.generate("caf\udce9", random_seed=1), 30))
    assert got == "".join(itertools.islice(m.generate("caf\ufffd", random_seed=1), 30))


def test_model_refuses_a_surrogate_in_its_vocabulary():
    with pytest.raises(ValueError, match="surrogate"):
        charstream.Model("ab\udcff")


@pytest.mark.parametrize("reopen", ["raise the cap", "open the vocabulary"])
def test_reopening_the_vocabulary_in_session_equals_after_a_reload(tmp_path, reopen):
    def fresh():
        if reopen == "raise the cap":
            return charstream.Model("", hidden_size=4, seed=0, max_vocab=3)
        return charstream.Model("ab\ufffd", hidden_size=4, seed=0, fixed_vocab=True)

    def reopened(m):
        if reopen == "raise the cap":
            m.max_vocab = 10
        else:
            m.fixed_vocab = False
        return m

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CharstreamWarning)
        m = fresh()
        list(charstream.Trainer(m).train(["abcd" * 10]))
        m.save(tmp_path / "m.npz")
        same = reopened(m)
        again = reopened(charstream.load(tmp_path / "m.npz"))
        la = [r.loss for r in charstream.Trainer(same).train(["cdcd" * 10])]
        lb = [r.loss for r in charstream.Trainer(again).train(["cdcd" * 10])]
    assert same.vocab == again.vocab == ("a", "b", "\ufffd", "c", "d")
    assert la == lb
