"""Property tests (hypothesis): chunking and resuming change nothing, any bytes get a documented
answer, and save then load is the identity."""
import math
import os
import re

import numpy as np
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import charstream
from charstream.cli import main
from charstream.cells import names
from helpers import assert_same_model

PARAM_NAMES = names("rnn", 1)

# A fixed number of examples, derandomized: the same cases on every run (CHARSTREAM_FUZZ_EXAMPLES=2000 runs more).
FAST = settings(max_examples=int(os.environ.get("CHARSTREAM_FUZZ_EXAMPLES", "40")), derandomize=True,
                deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Mostly a small alphabet (so chunks train and the loss moves), now and then any character at all.
chars = st.one_of(st.sampled_from("ab c\n"), st.sampled_from("éß→🙂\x00"),
                  st.integers(0, 0x10FFFF).map(chr))
texts = st.text(chars, min_size=0, max_size=300)


@FAST
@given(text=texts, cuts=st.lists(st.integers(0, 300), max_size=8), stops=st.lists(st.booleans(), max_size=9),
       T=st.integers(1, 9), seed=st.integers(0, 2**32))
def test_any_chunking_and_any_resumes_give_the_same_model_to_the_bit(tmp_path, text, cuts, stops, T, seed):
    """Split the text anywhere; at some splits end the stream, save, and load in a "new process"."""
    ref = charstream.Model("", hidden_size=4, seed=seed)
    list(charstream.Trainer(ref, seq_length=T).train([text]))

    bounds = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    pieces = [text[i:j] for i, j in zip(bounds, bounds[1:])]
    m = charstream.Model("", hidden_size=4, seed=seed)
    group = []
    for i, piece in enumerate(pieces):
        group.append(piece)
        if i < len(pieces) - 1 and not (stops[i] if i < len(stops) else False):
            continue
        list(charstream.Trainer(m, seq_length=T).train(group))
        group = []
        if m.state.chars_seen:   # an empty model has nothing worth a file
            m.save(tmp_path / "m.npz")
            m = charstream.load(tmp_path / "m.npz")
    list(charstream.Trainer(m, seq_length=T).train(group))
    assert_same_model(m, ref)


DOCUMENTED = re.compile(r"^Error: (<stdin>: looks like a binary file \(a NUL byte at byte \d+\); charstream trains "
                        r"on UTF-8 text|<stdin>: does not look like UTF-8 text \(\d+ of its first \d+ bytes are not "
                        r"UTF-8: a binary file, or another encoding\?\)|no text to train on: - gave no characters; "
                        r"the model was not changed)")


@FAST
@given(data=st.one_of(st.binary(max_size=400), texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
                      st.tuples(texts, st.binary(max_size=20), texts).map(
                          lambda p: p[0].encode("utf-8", "surrogatepass") + p[1] + p[2].encode("utf-8", "surrogatepass"))))
def test_any_bytes_into_train_get_a_model_or_a_documented_error(tmp_path, data):
    path = tmp_path / "b.npz"
    if path.exists():
        path.unlink()
    r = CliRunner().invoke(main, ["train", "-", "--model", str(path), "--hidden-size", "4", "--random-seed", "0",
                                  "--seq-length", "5", "--report-every", "60", "--sample-every", "0"], input=data)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.stderr
    if r.exit_code == 0:
        m = charstream.load(path)
        assert m.state.chars_seen == len(data.decode("utf-8", "replace"))
        assert all(line.startswith(("Warning: <stdin>: invalid UTF-8 at byte ", "chars ", "saved model to "))
                   for line in r.stderr.splitlines()), r.stderr
    else:
        assert r.exit_code == 1
        errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and DOCUMENTED.match(errors[0]), r.stderr
        assert not path.exists()


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def models(draw):
    vocab = draw(st.lists(st.characters(exclude_categories=("Cs",)), unique=True, max_size=6))   # no lone surrogates
    H, V = draw(st.integers(1, 4)), len(vocab)
    m = charstream.Model(vocab, hidden_size=H, seed=draw(st.integers(0, 2**64 - 1)))
    shapes = {"Wxh": (H, V), "Whh": (H, H), "Why": (V, H), "bh": (H,), "by": (V,)}
    for k, shape in shapes.items():
        m.params[k][...] = draw(hnp.arrays(np.float64, shape, elements=finite))
        m.state.mem[k][...] = draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1e300)))
    m.state.hprev[...] = draw(hnp.arrays(np.float64, (H,), elements=finite))
    m.state.tail = np.array(draw(st.lists(st.integers(0, 0x10FFFF), max_size=10)), dtype=np.uint32)
    m.state.seq_length = draw(st.integers(1, 10**6))
    m.state.learning_rate = draw(st.floats(1e-300, 1e300))
    m.state.chunks, m.state.chars_seen = draw(st.integers(0, 2**70)), draw(st.integers(0, 2**70))
    m.state.chars_trained = draw(st.integers(0, 2**70))
    m.state.smooth_loss = draw(st.one_of(st.just(math.nan), finite))
    m.rng.standard_normal(draw(st.integers(0, 3)))   # a generator state part-way through
    return m


@FAST
@given(m=models())
def test_save_then_load_is_the_identity(tmp_path, m):
    m.save(tmp_path / "m.npz")
    back = charstream.load(tmp_path / "m.npz")
    assert_same_model(back, m)
    for k in PARAM_NAMES:
        assert back.params[k].flags.c_contiguous
