"""Real processes: kill -9 at random moments, signals during saves, one writer, exact resume across runs."""
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import charstream

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
QUIET = ["--report-every", "0.02", "--sample-every", "0"]


def _cli(*args):
    return [sys.executable, "-m", "charstream", *map(str, args)]


def _popen(args, **kw):
    """The installed command, run from a folder where no source tree shadows the package."""
    return subprocess.Popen(args, cwd=DATA, **kw)


def _run(args, input=None, timeout=60):
    return subprocess.run(args, cwd=DATA, input=input, capture_output=True, timeout=timeout)


def _stop(proc):
    """For `finally`: make sure the process is gone and its pipes closed."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f:
            f.close()


def _wait_for_line(proc, pattern=b"chars ", timeout=30):
    """Read stderr (unbuffered: select and a buffered reader do not mix) until a line holds `pattern`."""
    fd, buf = proc.stderr.fileno(), b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        data = os.read(fd, 65536)
        if not data:
            break
        buf += data
        for line in buf.splitlines(keepends=True):
            if pattern in line and line.endswith(b"\n"):
                return line
        buf = buf[buf.rfind(b"\n") + 1:]
    raise AssertionError(f"no {pattern!r} line on stderr within {timeout} s")


def _temps(folder, name):
    return [f for f in os.listdir(folder) if f.startswith(f".{name}.charstream-") and f.endswith(".tmp")]


@pytest.fixture(scope="module")
def long_text(shakespeare, multilingual):
    """~200k characters, new ones arriving throughout (so the vocabulary grows during training)."""
    parts, rng = [], random.Random(0)
    for i in range(10):
        parts.append(shakespeare[i * 2000:(i + 1) * 2000 + 17])
        line = multilingual.splitlines()[i % len(multilingual.splitlines())]
        parts.append(line + "\n")
    text = "".join(parts)
    return "".join(text[rng.randrange(len(text) // 2):] for _ in range(12))[:200_000]


def test_kill_9_at_random_moments_leaves_a_model_that_loads(tmp_path, long_text):
    """24 runs that resume one model, saving after nearly every chunk, each killed at a random moment."""
    src = tmp_path / "text.txt"
    src.write_text(long_text * 5, encoding="utf-8")   # a second or more of training: never ends first
    path = tmp_path / "k.npz"
    rng = random.Random(9)
    seen, torn_saves, reads = 0, 0, 0
    for i in range(24):
        proc = _popen(_cli("train", src, "--model", path, "--hidden-size", "8", "--random-seed", "3",
                           "--checkpoint-every", "0.001", *QUIET), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            if i % 4:   # most kills land while training (and, at this pace, mostly inside a save)
                _wait_for_line(proc)
                until = time.monotonic() + rng.uniform(0, 0.15)
                while time.monotonic() < until:   # meanwhile a reader always finds a whole model
                    if path.exists():
                        reads += charstream.load(path).state.chars_seen >= 0
            else:       # some during start-up: loading, locking, cleaning up
                time.sleep(rng.uniform(0, 0.4))
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            _stop(proc)
        torn_saves += bool(_temps(tmp_path, "k.npz"))
        assert len(_temps(tmp_path, "k.npz")) <= 1, "stale temporary files pile up"
        if path.exists():
            m = charstream.load(path)   # the old model or the new one, never a torn file
            assert m.state.chars_seen >= seen
            seen = m.state.chars_seen
    assert seen > 0
    # A clean run after all that: resumes, saves, and leaves neither temporary files nor the lock.
    r = _run(_cli("train", "-", "--model", path, *QUIET), input=long_text[:3000].encode())
    assert r.returncode == 0, r.stderr
    assert charstream.load(path).state.chars_seen == seen + 3000
    assert sorted(os.listdir(tmp_path)) == ["k.npz", "text.txt"]
    print(f"{torn_saves} of 24 kills left a temporary file (a save cut short); {reads} reads while saving")


def _reference(text, seed, H=8):
    ref = charstream.Model("", hidden_size=H, seed=seed)
    list(charstream.Trainer(ref).train([text]))
    return ref


def _assert_same_file(a, b):
    """Every array of two model files equal to the bit (meta parsed, so key order does not matter)."""
    with np.load(a, allow_pickle=False) as za, np.load(b, allow_pickle=False) as zb:
        assert sorted(za.files) == sorted(zb.files)
        for k in za.files:
            if k == "meta":
                assert json.loads(str(za[k])) == json.loads(str(zb[k]))
            else:
                assert za[k].dtype == zb[k].dtype and za[k].shape == zb[k].shape, k
                assert za[k].tobytes() == zb[k].tobytes(), k


def test_signals_at_random_moments_save_a_model_that_resumes_exactly(tmp_path, long_text):
    """SIGTERM or Ctrl-C (sometimes twice) while saving after nearly every chunk and growing the
    vocabulary: exit 143 or 130, one line saying where, and a model that, trained on the rest of
    the text, equals to the bit a model trained on all of it."""
    text = long_text
    ref = _reference(text, seed=5)
    rng = random.Random(2)
    for i in range(8):
        path = tmp_path / f"s{i}.npz"
        sig = (signal.SIGTERM, signal.SIGINT)[i % 2]
        proc = _popen(_cli("train", "-", "--model", path, "--hidden-size", "8", "--random-seed", "5",
                           "--checkpoint-every", "0.001", *QUIET),
                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:   # the pipe stays open: the signal always comes before the stream ends
            proc.stdin.write(text.encode())
            proc.stdin.flush()
            _wait_for_line(proc)
            time.sleep(rng.uniform(0, 0.1))
            proc.send_signal(sig)
            codes = {sig: 128 + sig}
            if i % 3 == 2:   # a second, different signal: either may be handled first
                other = signal.SIGINT if sig == signal.SIGTERM else signal.SIGTERM
                proc.send_signal(other)
                codes[other] = 128 + other
            code = proc.wait(timeout=30)
            err = proc.stderr.read().decode()
        finally:
            _stop(proc)
        assert code in codes.values(), err
        assert "Traceback" not in err
        assert err.splitlines()[-1] == f"interrupted: saved model to {path}"
        m = charstream.load(path)
        assert m.state.chunks > 0
        list(charstream.Trainer(m).train([text[m.state.chars_seen:]]))
        for k in ref.params:
            assert m.params[k].tobytes() == ref.params[k].tobytes(), (i, k)
            assert m.state.mem[k].tobytes() == ref.state.mem[k].tobytes(), (i, k)
        assert m.state.hprev.tobytes() == ref.state.hprev.tobytes()
        assert m.vocab == ref.vocab and m.state.chunks == ref.state.chunks
        assert m.rng.bit_generator.state == ref.rng.bit_generator.state


def test_resume_in_a_new_process_equals_one_process_to_the_bit(tmp_path, shakespeare):
    """A, then B in a new process == A+B in one process, for every array and every meta field.

    A's length is not a multiple of seq_length (its tail carries over) and B brings characters A
    never had. The file holds no run statistics (no wall-clock times), so nothing is excluded.
    """
    a = shakespeare[:3013]
    b = "ÆØÅ ünïcödé → ∑ 🙂 " + shakespeare[3013:5000]
    assert len(a) % 25 and not set("ÆØÅ🙂∑") & set(a)
    common = ["--hidden-size", "12", "--random-seed", "4", "--seq-length", "25", *QUIET]
    (tmp_path / "a.txt").write_text(a, encoding="utf-8")
    split, whole = tmp_path / "split.npz", tmp_path / "whole.npz"
    assert _run(_cli("train", tmp_path / "a.txt", "--model", split, *common)).returncode == 0
    assert charstream.load(split).state.tail.size == (len(a) - 1) % 25 + 1
    r = _run(_cli("train", "-", "--model", split, *QUIET), input=b.encode())
    assert r.returncode == 0, r.stderr
    r = _run(_cli("train", "-", "--model", whole, *common), input=(a + b).encode())
    assert r.returncode == 0, r.stderr
    _assert_same_file(split, whole)


def test_one_writer_many_readers_and_no_stale_lock_after_kill_9(tmp_path, shakespeare):
    path = tmp_path / "w.npz"
    writer = _popen(_cli("train", "-", "--model", path, "--hidden-size", "8", "--checkpoint-every", "0.05",
                         "--report-every", "0", "--sample-every", "0"),
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        writer.stdin.write(shakespeare[:4000].encode())
        writer.stdin.flush()
        _wait_for_line(writer)
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.exists()
        second = _run(_cli("train", "-", "--model", path), input=b"other text " * 10, timeout=30)
        assert second.returncode == 1
        assert second.stderr.decode() == (
            f"Error: {path} is being trained by another charstream process (pid {writer.pid}); "
            f"wait for it to end, or train another --model\n")
        reader = _run(_cli("generate", "--model", path, "--length", "50", "--random-seed", "1"), timeout=30)
        assert reader.returncode == 0 and len(reader.stdout.decode()) == 50
        assert writer.poll() is None
        writer.kill()
        writer.wait(timeout=30)
    finally:
        _stop(writer)
    assert (tmp_path / "w.npz.lock").exists()   # the file stays after kill -9, the lock does not
    again = _run(_cli("train", "-", "--model", path, *QUIET), input=shakespeare[4000:5000].encode())
    assert again.returncode == 0, again.stderr
    assert not (tmp_path / "w.npz.lock").exists()


def _train_small(path, shakespeare):
    """A small trained model at path, made by the command in its own process."""
    r = _run(_cli("train", "-", "--model", path, "--hidden-size", "8", *QUIET), input=shakespeare[:2000].encode())
    assert r.returncode == 0, r.stderr


def test_generate_stops_cleanly_on_sigterm(tmp_path, shakespeare):
    path = tmp_path / "g.npz"
    _train_small(path, shakespeare)
    for sig, expected in ((signal.SIGTERM, 0), (signal.SIGINT, 130)):
        gen = _popen(_cli("generate", "--model", path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert gen.stdout.read(100)   # it is writing
            gen.send_signal(sig)
            gen.stdout.close()
            assert gen.wait(timeout=30) == expected
            assert gen.stderr.read() == b""
        finally:
            _stop(gen)


def test_stdin_closed_or_empty(tmp_path):
    path = tmp_path / "c.npz"
    closed = subprocess.run(_cli("train", "-", "--model", path), cwd=DATA, capture_output=False,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=60,
                            preexec_fn=lambda: os.close(0))
    assert closed.returncode == 1
    assert closed.stderr.decode() == "Error: <stdin>: stdin is closed\n"
    empty = _run(_cli("train", "-", "--model", path), input=b"")
    assert empty.returncode == 1
    assert empty.stderr.decode() == "Error: no text to train on: - gave no characters; the model was not changed\n"
    assert not path.exists() and os.listdir(tmp_path) == []


def test_ten_megabytes_without_a_newline_train_as_they_arrive(tmp_path):
    """No line buffering: the first megabyte trains while the pipe is still open, and the whole
    stream is never held in memory."""
    path = tmp_path / "long.npz"
    piece = ("abcdefghij klmnopqrstuvwxyz " * 40_000)[:1_000_000].encode()
    proc = _popen(_cli("train", "-", "--model", path, "--hidden-size", "4", "--seq-length", "200",
                       "--checkpoint-every", "0.1", "--report-every", "60", "--sample-every", "0"),
                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(piece)
        proc.stdin.flush()
        deadline = time.monotonic() + 60   # the idle checkpoint shows what has trained so far
        while time.monotonic() < deadline:
            st = charstream.load(path).state if path.exists() else None
            if st is not None and st.chars_seen == 1_000_000 and st.chunks == 4999:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the first megabyte did not train while the pipe stayed open")
        assert proc.poll() is None
        for _ in range(9):
            proc.stdin.write(piece)
        proc.stdin.flush()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if charstream.load(path).state.chars_seen == 10_000_000:
                break
            time.sleep(0.1)
        with open(f"/proc/{proc.pid}/status") as f:
            peak_kb = int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        _stop(proc)
    assert peak_kb < 150_000, f"{peak_kb} kB: the stream seems to be held in memory"
    assert charstream.load(path).state.chars_seen == 10_000_000


def test_a_closed_stderr_does_not_cost_the_model(tmp_path, shakespeare):
    """`charstream train ... 2>&1 | head -1`: progress cannot be written, the model is still saved."""
    src = tmp_path / "t.txt"
    src.write_text(shakespeare[:5000], encoding="utf-8")
    path = tmp_path / "e.npz"
    proc = _popen(_cli("train", src, "--model", path, "--hidden-size", "8", "--report-every", "0"),
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.stderr.close()   # nobody reads stderr: every write to it fails with EPIPE
        assert proc.wait(timeout=60) == 0
    finally:
        _stop(proc)
    assert charstream.load(path).state.chars_seen == 5000


def test_sighup_saves_like_sigterm_unless_ignored_as_under_nohup(tmp_path, shakespeare):
    for ignored in (False, True):
        path = tmp_path / f"h{ignored}.npz"
        proc = _popen(_cli("train", "-", "--model", path, "--hidden-size", "8", "--report-every", "0",
                           "--sample-every", "0", "--checkpoint-every", "0"),
                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                      preexec_fn=(lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if ignored else None)
        try:
            proc.stdin.write(shakespeare[:3000].encode())
            proc.stdin.flush()
            _wait_for_line(proc)
            proc.send_signal(signal.SIGHUP)
            if ignored:
                with pytest.raises(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.5)
                proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        finally:
            _stop(proc)
        assert code == (143 if ignored else 129)
        assert charstream.load(path).state.chars_seen == 3000


def test_a_file_size_limit_while_saving_keeps_the_old_model(tmp_path, shakespeare):
    """A real write failure in a real process (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC):
    checkpoints warn once and training goes on; the final save fails with one error; the old
    model is intact and no temporary file is left."""
    import resource
    path = tmp_path / "f.npz"
    assert _run(_cli("train", "-", "--model", path, "--hidden-size", "8", *QUIET),
                input=shakespeare[:3000].encode()).returncode == 0
    before = path.read_bytes()
    limit = len(before) + 200   # new characters make the next save bigger than this

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run(_cli("train", "-", "--model", path, "--checkpoint-every", "0.0001", *QUIET), cwd=DATA,
                       input=("ÆØÅ€→∑🙂éèêë " + shakespeare[3000:4000]).encode() * 5, capture_output=True,
                       timeout=60, preexec_fn=small_files)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert err.count("Warning: checkpoint failed, training goes on and will retry: ") == 1
    assert err.splitlines()[-1] == f"Error: saving {path} failed: File too large; {path} keeps its last good save"
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["f.npz"]


def test_generate_blocked_on_a_full_pipe_still_stops(tmp_path, shakespeare):
    path = tmp_path / "g.npz"
    _train_small(path, shakespeare)
    for sig, expected in ((signal.SIGTERM, 0), (signal.SIGINT, 130)):
        gen = _popen(_cli("generate", "--model", path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert gen.stdout.read(10)
            time.sleep(0.5)   # nobody reads: the pipe fills and generate blocks in write()
            gen.send_signal(sig)
            assert gen.wait(timeout=30) == expected
            assert gen.stderr.read() == b""
        finally:
            _stop(gen)
