"""Training with lanes and float32 through the library and the command: the documented dealing of the
stream to lanes, exact resume, thread counts, the file, and the refusals."""
import numpy as np
import pytest
from click.testing import CliRunner

import charstream
from charstream import cells
from charstream._kernel import LaneKernel
from charstream.cli import main
from charstream.trainer import default_threads

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n") * 12


def _same(a, b):
    (ma, xa), (mb, xb) = a.to_arrays(), b.to_arrays()
    ma, mb = dict(ma), dict(mb)
    for m in (ma, mb):
        m.pop("history", None)
        m.pop("history_open", None)
    assert ma == mb
    assert xa.keys() == xb.keys()
    for k in xa:
        assert xa[k].dtype == xb[k].dtype and np.array_equal(xa[k], xb[k]), k


def _model(dtype="float32", cell="lstm", layers=1, H=16):
    return charstream.Model(sorted(set(TEXT)), H, random_seed=3, cell=cell, layers=layers, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lanes_train_the_documented_stretches(dtype):
    """Round r, chunk s, lane b trains text[r*B*D + b*D + s*T : ... + T + 1]: the same updates by hand."""
    B, D, T = 3, 40, 10
    m = _model(dtype)
    ref = _model(dtype)
    tr = charstream.Trainer(m, seq_length=T, lanes=B, block=D, learning_rate=0.01)
    records = list(tr.train([TEXT]))
    st = ref.state
    k = LaneKernel(ref.params, st.mem, T, cell="lstm", moments=st.moments, steps=st.steps, lanes=B)
    k.input_lr = ref.input_lr                           # as Model.kernel sets it
    h = np.zeros((B, cells.state_size("lstm", 1, 16)), dtype=dtype)
    idx = ref.vocabulary.encode(TEXT)
    n = 0
    for r in range(len(TEXT) // (B * D) + 1):
        for s in range(D // T):
            if r * B * D + (B - 1) * D + s * T + T + 1 > len(TEXT):   # a chunk trains once its text is there
                break
            xs = np.stack([idx[r * B * D + b * D + s * T:r * B * D + b * D + s * T + T + 1] for b in range(B)])
            loss = k.train_chunk(np.ascontiguousarray(xs, dtype=np.int32), 0, h, 0.01)
            assert records[n].loss == pytest.approx(loss / B, rel=1e-12)
            n += 1
    assert n == len(records) == m.state.chunks
    for name in m.params:
        assert np.array_equal(m.params[name], ref.params[name]), name
    assert np.array_equal(m.state.hlanes, h)
    assert np.array_equal(m.state.hprev, h[-1]), "generation starts from the last lane's state"
    assert m.state.chars_trained == n * B * T


def test_how_the_stream_is_split_changes_nothing_and_resume_is_exact(tmp_path):
    whole = _model("float32", "gru", 2)
    list(charstream.Trainer(whole, seq_length=8, lanes=4, block=24).train([TEXT]))
    parts = _model("float32", "gru", 2)
    cut = [0, 5, 97, 98, 400, 1001, len(TEXT)]
    list(charstream.Trainer(parts, seq_length=8, lanes=4, block=24, threads=1).train(
        [TEXT[a:b] for a, b in zip(cut[:2], cut[1:3])]))
    parts.save(tmp_path / "m.npz")
    parts = charstream.load(tmp_path / "m.npz")
    assert parts.state.lanes == 4 and parts.state.block == 24 and parts.dtype == "float32"
    list(charstream.Trainer(parts, threads=default_threads()).train(
        [TEXT[a:b] for a, b in zip(cut[2:-1], cut[3:])]))
    _same(whole, parts)


def test_float32_models_keep_their_type_through_growth_files_and_features(tmp_path):
    m = charstream.Model("", 12, random_seed=1, cell="lstm", dtype="float32")
    list(charstream.Trainer(m, seq_length=16).train([TEXT]))
    assert m.dtype == "float32" and all(v.dtype == np.float32 for v in m.params.values())
    assert m.state.hprev.dtype == np.float32
    m.save(tmp_path / "m.npz")
    back = charstream.load(tmp_path / "m.npz")
    _same(m, back)
    text = "".join(back.generate(prompt="First", length=50, random_seed=2))
    assert len(text) == 50 and text == "".join(back.generate(prompt="First", length=50, random_seed=2))
    assert 0 < back.evaluate(TEXT[:300]) < 5
    assert 0 < back.evaluate(TEXT[:300], adapt=True) < 5
    greedy = "".join(back.generate(prompt="First", length=20, sampler="greedy"))
    top = "".join(back.generate(prompt="First", length=20, top_k=3, top_p=0.9, random_seed=1))
    assert len(greedy) == len(top) == 20


def test_the_rnn_at_float64_and_one_lane_is_unchanged():
    """lanes=1 (given or not) and float64 go through the seed's kernel: the same model to the bit."""
    a = charstream.Model("", 20, random_seed=5)
    b = charstream.Model("", 20, random_seed=5)
    list(charstream.Trainer(a).train([TEXT]))
    list(charstream.Trainer(b, lanes=1, threads=2).train([TEXT]))
    _same(a, b)
    assert type(a.kernel()).__name__ == "Kernel"


def test_refusals():
    m = _model()
    list(charstream.Trainer(m, lanes=2, block=30).train([TEXT]))
    assert 0 < m.evaluate(TEXT[:400], adapt=True) < 10, "adapt scores on one lane"
    assert m.state.lanes == 2
    with pytest.raises(ValueError, match="trained with 2 lanes"):
        charstream.Trainer(m, lanes=3)
    with pytest.raises(ValueError, match="lanes must be an integer from 1 to 4096"):
        charstream.Trainer(_model(), lanes=0)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        charstream.Trainer(_model(), threads=0)
    with pytest.raises(ValueError, match="dtype must be float64 or float32"):
        charstream.Model("ab", 4, dtype="float16")
    with pytest.warns(charstream.CharstreamWarning, match="more than the"):
        t = charstream.Trainer(_model(), threads=default_threads() + 5)
    assert t.threads == default_threads()


def test_the_command_takes_dtype_lanes_and_threads(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    model = str(tmp_path / "m.npz")
    run = CliRunner().invoke
    r = run(main, ["train", str(corpus), "--model", model, "--cell", "gru", "--dtype", "float32", "--lanes", "4",
                   "--threads", "1", "--seq-length", "10"])
    assert r.exit_code == 0, r.output
    m = charstream.load(model)
    assert (m.dtype, m.state.lanes, m.state.block) == ("float32", 4, (len(TEXT) - 1) // 4 // 10 * 10)
    assert m.state.chars_trained == 4 * m.state.block, "one region per lane: the pass is trained whole"
    before = open(model, "rb").read()
    for args, words in ((["--lanes", "2"], "trained with 4 lanes"), (["--dtype", "float64"], "has dtype float32"),
                        (["--lanes", "0"], "--lanes"), (["--threads", "0"], "--threads")):
        r = run(main, ["train", str(corpus), "--model", model] + args)
        assert r.exit_code == 2 and words in r.output, r.output
        assert open(model, "rb").read() == before
    r = run(main, ["info", "--model", model])
    assert "float32" in r.output


@pytest.mark.parametrize("max_chars, lanes", [(None, 16), (12_000, 16), (5_000, 9), (1_000, 1)])
def test_a_new_models_lanes_split_what_the_run_will_read(tmp_path, shakespeare, max_chars, lanes):
    # The default lanes (16 for the lstm) split one pass of a file into contiguous regions; with
    # --max-chars inside the first pass they split what is read, or the lanes past the stop get nothing
    # (a 20,000-character file and --max-chars 5,000 trained no chunk at all before).
    text = tmp_path / "t.txt"
    text.write_text(shakespeare, encoding="utf-8")
    assert len(shakespeare) > 12_000 and shakespeare.isascii()
    T = cells.DEFAULTS["lstm"].seq_length
    summary = charstream.train([str(text)], model=tmp_path / "m.npz", cell="lstm", hidden_size=8, passes=1,
                               max_chars=max_chars, validate=False)
    st = charstream.load(tmp_path / "m.npz").state
    assert st.lanes == lanes
    read = len(shakespeare) if max_chars is None else max_chars
    if lanes > 1:   # each lane's region: what is read over the lanes, whole chunks of T
        assert st.block == (read - 1) // lanes // T * T
    assert summary.chunks == st.chunks >= read // (lanes * (T + 1)) - 1 > 0
