"""The online trainer: chunk walk, chunking invariance, tail, vocabulary growth, memory."""
import numpy as np
import pytest

import charstream
import oracle
from helpers import assert_same_model


@pytest.mark.parametrize("k", [0, 1, 2, 7])
def test_text_of_one_plus_k_T_trains_k_chunks(k, shakespeare):
    for T in (1, 5, 25):
        text = shakespeare[:1 + k * T]
        m = charstream.Model("", hidden_size=8, seed=0)
        records = list(charstream.Trainer(m, seq_length=T).train([text]))
        assert len(records) == k
        assert [r.chunk for r in records] == list(range(1, k + 1))
        # only the last character is left: the next chunk's first input
        assert charstream.vocab.to_text(m.state.tail) == text[-1]
        assert m.state.chars_seen == len(text) and m.state.chars_trained == k * T


def test_one_short_of_a_chunk_trains_nothing_and_keeps_the_text(shakespeare):
    m = charstream.Model("", hidden_size=8, seed=0)
    assert list(charstream.Trainer(m).train([shakespeare[:25]])) == []
    assert charstream.vocab.to_text(m.state.tail) == shakespeare[:25]
    assert m.vocab == tuple(dict.fromkeys(shakespeare[:25]))  # the tail's characters joined at the end


@pytest.mark.parametrize("splits", [
    lambda t: [t],
    lambda t: list(t),
    lambda t: [t[i:i + 7] for i in range(0, len(t), 7)],
    lambda t: [t[:1], t[1:26], t[26:27], t[27:1000], "", t[1000:]],
])
def test_chunking_changes_nothing_to_the_bit(splits, shakespeare):
    text = shakespeare[:3000]
    ref = charstream.Model("", hidden_size=16, seed=4)
    ref_losses = [r.loss for r in charstream.Trainer(ref).train([text])]
    m = charstream.Model("", hidden_size=16, seed=4)
    losses = [r.loss for r in charstream.Trainer(m).train(iter(splits(text)))]
    assert losses == ref_losses
    assert_same_model(m, ref)


def test_two_calls_continue_like_one(shakespeare):
    text = shakespeare[:4000]
    ref = charstream.Model("", hidden_size=16, seed=4)
    list(charstream.Trainer(ref).train([text]))
    m = charstream.Model("", hidden_size=16, seed=4)
    tr = charstream.Trainer(m)
    list(tr.train([text[:1234]]))
    list(tr.train([text[1234:]]))
    assert_same_model(m, ref)


def test_stopping_early_keeps_all_untrained_text(shakespeare):
    text = shakespeare[:5000]
    ref = charstream.Model("", hidden_size=16, seed=2)
    list(charstream.Trainer(ref).train([text]))
    m = charstream.Model("", hidden_size=16, seed=2)
    tr = charstream.Trainer(m)
    for r in tr.train([text]):
        if r.chunk == 10:
            break
    assert m.state.chunks == 10
    assert m.state.tail.size == len(text) - 250   # nothing dropped, nothing trained twice
    rest = list(charstream.Trainer(m).train(iter([])))   # what was read ahead trains now
    assert len(rest) == (len(text) - 1) // 25 - 10
    assert_same_model(m, ref)


def test_vocabulary_grows_in_first_seen_order_when_its_chunk_trains():
    text = "ab" * 20 + "c" + "ab" * 30 + "d"       # 'd' is the very last character
    m = charstream.Model("", hidden_size=8, seed=0)
    seen = []
    for r in charstream.Trainer(m, seq_length=10).train([text]):
        seen.append((r.chunk, "".join(m.vocab)))
    assert seen[0] == (1, "ab")
    assert seen[3] == (4, "abc")               # chunk 4 (positions 30-40) holds 'c' at 40
    assert m.vocab == tuple("abcd")             # 'd' joined with the tail at the end
    assert m.params["Wxh"].shape == (8, 4) and m.params["Why"].shape == (4, 8)
    assert m.state.mem["by"].shape == (4,)


def test_growth_draws_from_the_models_generator():
    m = charstream.Model("", hidden_size=6, seed=9)
    rng = np.random.default_rng(9)
    rng.standard_normal((6, 0)), rng.standard_normal((6, 6))
    m.grow("xy")
    for i in range(2):
        np.testing.assert_array_equal(m.params["Wxh"][:, i], rng.standard_normal(6) * 0.01)
        np.testing.assert_array_equal(m.params["Why"][i], rng.standard_normal(6) * 0.01)
    assert m.params["by"].tolist() == [0.0, 0.0]


def test_growing_model_matches_oracle_on_full_vocabulary(shakespeare):
    """Once every character has joined, training equals the oracle run from that point."""
    text = shakespeare[:400]
    m = charstream.Model("", hidden_size=10, seed=0)
    tr = charstream.Trainer(m, seq_length=25)
    assert len(list(tr.train([text[:26]]))) == 1
    hprev = m.state.hprev.copy()
    m.grow(dict.fromkeys(text))  # make the vocabulary complete before both continue
    p = {k: v.copy() for k, v in m.params.items()}
    mem = {k: v.copy() for k, v in m.state.mem.items()}
    recs = list(tr.train([text[26:26 + 25 * 4]]))
    idx = list(m.encode(text[25:26 + 25 * 4]))
    losses, _ = oracle.train(p, mem, idx, hprev=hprev)
    np.testing.assert_allclose([r.loss for r in recs], losses, rtol=1e-9)
    assert all(np.isfinite(r.loss) for r in recs)


def test_every_loss_is_finite_on_unicode(multilingual):
    m = charstream.Model("", hidden_size=16, seed=0)
    recs = list(charstream.Trainer(m).train([multilingual] * 3))
    assert recs and all(np.isfinite(r.loss) for r in recs)
    assert set(multilingual) == set(m.vocab)
    assert "🎉" in m.vocab and "春" in m.vocab


def test_bad_arguments():
    m = charstream.Model("ab", hidden_size=4)
    with pytest.raises(ValueError, match="seq_length"):
        charstream.Trainer(m, seq_length=0)
    with pytest.raises(ValueError, match="learning_rate"):
        charstream.Trainer(m, learning_rate=-1)
    with pytest.raises(TypeError, match="iterable of str"):
        list(charstream.Trainer(m).train([b"bytes"]))


def test_memory_does_not_grow_with_the_stream():
    import tracemalloc
    m = charstream.Model("", hidden_size=8, seed=0)
    piece = "the quick brown fox jumps over the lazy dog\n" * 1500

    def stream(n):
        for _ in range(n):
            yield piece

    def drain(records):
        for _ in records:
            pass

    tr = charstream.Trainer(m)
    drain(tr.train(stream(2)))
    tracemalloc.start()
    drain(tr.train(stream(5)))
    small = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    drain(tr.train(stream(60)))
    large = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert large < small * 1.5 + 200_000, (small, large)


# -- a new seq_length (moved from test_qa.py and test_review.py)

def test_a_new_seq_length_keeps_the_smoothed_loss_per_char(shakespeare):
    m = charstream.Model("", hidden_size=8, seed=0)
    list(charstream.Trainer(m).train([shakespeare[:2001]]))
    per_char = m.state.smooth_loss / m.state.seq_length
    t = charstream.Trainer(m, seq_length=100)
    assert m.state.smooth_loss / t.seq_length == pytest.approx(per_char)
    charstream.Trainer(m, seq_length=100)              # the same length again changes nothing
    assert m.state.smooth_loss / 100 == pytest.approx(per_char)
