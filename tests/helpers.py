"""Helpers the tests share: the command in-process and as a real process, model comparisons, waits."""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from click.testing import CliRunner

import charstream
from charstream.cli import main

DATA = Path(__file__).parent / "data"
TIMEOUT = 10   # seconds any one wait in a test may take before it fails the test


def invoke(*args, input=None, catch_exceptions=True):
    """`charstream ARGS` through click's CliRunner, in this process."""
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=catch_exceptions)


def cli(*args):
    """The argv of the installed command: `python -m charstream ARGS`."""
    return [sys.executable, "-m", "charstream", *map(str, args)]


def popen(args, **kw):
    """The command as a real process, run from a folder where no source tree shadows the package."""
    kw.setdefault("cwd", DATA)
    return subprocess.Popen(args, **kw)


def run(args, input=None, timeout=60, **kw):
    """The command as a real process, to its end: a CompletedProcess with stdout and stderr as bytes."""
    kw.setdefault("cwd", DATA)
    kw.setdefault("capture_output", True)
    return subprocess.run(args, input=input, timeout=timeout, **kw)


def stop(proc):
    """For `finally`: make sure the process is gone and its pipes closed."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f:
            f.close()


def wait_until(condition, timeout=30, what="the condition", every=0.02):
    """Poll `condition()` until it returns something true (returned), or fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(every)


def saved_state(path):
    """The training state in the model file at `path`, or None if there is none (yet) or it is mid-write."""
    try:
        return charstream.load(path).state if os.path.exists(path) else None
    except charstream.ModelFileError:
        return None


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def without_seconds(history):
    """A history's points (or its open interval) without their wall-clock seconds, the one column no
    two runs share."""
    return [[p[0], p[1]] + list(p[3:]) for p in history]


def assert_same_model(m, ref):
    """Two models equal to the bit: cell, layers, vocabulary and its settings, parameters, the
    optimizer's memories (Adagrad's, or Adam's two moments and step count), hidden state, the
    untrained tail, every counter and setting of the training state, the generator's state, and the
    training curve but for its wall-clock seconds."""
    assert (m.cell, m.layers) == (ref.cell, ref.layers)
    assert m.vocab == ref.vocab
    assert (m.max_vocab, m.fixed_vocab) == (ref.max_vocab, ref.fixed_vocab)
    assert m.params.keys() == ref.params.keys() == m.state.mem.keys() == ref.state.mem.keys()
    assert m.state.moments.keys() == ref.state.moments.keys()
    for k in m.params:
        assert same_bits(m.params[k], ref.params[k]), k
        assert same_bits(m.state.mem[k], ref.state.mem[k]), "m" + k
    for k in m.state.moments:
        assert same_bits(m.state.moments[k], ref.state.moments[k]), "v" + k
    assert same_bits(m.state.steps, ref.state.steps)
    assert same_bits(m.state.hprev, ref.state.hprev)
    assert np.array_equal(np.asarray(m.state.tail, dtype=np.uint32), np.asarray(ref.state.tail, dtype=np.uint32))
    a, b = m.state, ref.state
    assert (a.seq_length, a.learning_rate, a.chunks, a.chars_seen, a.chars_trained, a.reset_every) == \
        (b.seq_length, b.learning_rate, b.chunks, b.chars_seen, b.chars_trained, b.reset_every)
    assert (math.isnan(a.smooth_loss) and math.isnan(b.smooth_loss)) or a.smooth_loss == b.smooth_loss
    assert m.rng.bit_generator.state == ref.rng.bit_generator.state
    assert without_seconds(m.history.points) == without_seconds(ref.history.points)
    assert (m.history.nats, m.history.chars) == (ref.history.nats, ref.history.chars)


def comparable_meta(meta):
    """A file's meta with the training curve's wall-clock seconds taken out: what two runs of the
    same training share, to the bit."""
    meta = dict(meta)
    if "history" in meta:
        meta["history"] = without_seconds(meta["history"])
        meta["history_open"] = meta["history_open"][:2]
    if "validation" in meta:   # when the best was measured, in wall-clock seconds of training
        meta["validation"] = {k: v for k, v in meta["validation"].items() if k != "best_seconds"}
    return meta


def assert_same_file(a, b):
    """Every array of two model files equal to the bit, and every meta field (parsed, so key order
    does not matter) but the training curve's wall-clock seconds."""
    with np.load(a, allow_pickle=False) as za, np.load(b, allow_pickle=False) as zb:
        assert sorted(za.files) == sorted(zb.files)
        for k in za.files:
            if k == "meta":
                assert comparable_meta(json.loads(str(za[k]))) == comparable_meta(json.loads(str(zb[k])))
            else:
                assert same_bits(za[k], zb[k]), k


def train_with_stderr_closed(folder, text, how):
    """Run `charstream train` on `text` as a real process whose stderr is closed `how`: "at start"
    (`2>&-`: fd 2 is not open) or "while running" (a pipe nobody reads: every write fails with EPIPE,
    as in `charstream train ... 2>&1 | head -0`). Returns the exit code and the saved model."""
    (folder / "a.txt").write_text(text, encoding="utf-8")
    args = cli("train", folder / "a.txt", "--model", folder / "m.npz", "--hidden-size", "8", "--report-every", "0")
    if how == "at start":
        code = subprocess.run(args, cwd=DATA, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, preexec_fn=lambda: os.close(2), timeout=60).returncode
    else:
        proc = popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            proc.stderr.close()
            code = proc.wait(timeout=60)
        finally:
            stop(proc)
    return code, charstream.load(folder / "m.npz")
