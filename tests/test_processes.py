"""Real processes: kill -9 at random moments, signals during saves, one writer, exact resume across runs."""
import os
import random
import re
import select
import signal
import subprocess
import time
import types

import pytest

import charstream
from helpers import (DATA, assert_same_file, assert_same_model, cli, popen, run, saved_state, stop,
                     train_with_stderr_closed, wait_until)

QUIET = ["--report-every", "0.02", "--sample-every", "0"]


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


def _stopped(pid):
    """True once the process is stopped (SIGSTOP has taken effect): /proc/PID/stat's state is T."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")


def test_kill_9_at_random_moments_leaves_a_model_that_loads(tmp_path, long_text):
    """24 runs that resume one model, saving after nearly every chunk, each killed at a random moment:
    18 of them while it trains, each caught inside a save (stopped with SIGSTOP while its temporary
    file exists), 6 during start-up (loading, locking, cleaning up)."""
    src = tmp_path / "text.txt"
    src.write_text(long_text * 5, encoding="utf-8")   # a second or more of training: never ends first
    path = tmp_path / "k.npz"
    rng = random.Random(9)
    seen = 0
    chunks, before = 0, types.SimpleNamespace(chunks=0)
    for i in range(24):
        proc = popen(cli("train", src, "--model", path, "--hidden-size", "8", "--random-seed", "3",
                         "--checkpoint-every", "0.001", *QUIET), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        mid_save = None   # the model file's bytes while the writer was stopped inside a save
        try:
            if i % 4:
                _wait_for_line(proc)
                wait_until(lambda: (saved_state(path) or before).chunks > chunks, what="a save of this run")
                time.sleep(rng.uniform(0, 0.15))   # a random moment to stop at, not a synchronisation
                deadline = time.monotonic() + 30
                while True:   # stop it until a stop falls inside a save
                    assert time.monotonic() < deadline, "no stop within 30 s fell inside a save"
                    proc.send_signal(signal.SIGSTOP)
                    wait_until(lambda: _stopped(proc.pid), timeout=10, what="SIGSTOP", every=0.001)
                    if _temps(tmp_path, "k.npz"):
                        break
                    proc.send_signal(signal.SIGCONT)
                # a reader while the writer is stopped mid-save finds a whole model
                assert charstream.load(path).state.chunks > chunks
                mid_save = path.read_bytes()
            else:
                time.sleep(rng.uniform(0, 0.4))   # a random moment during start-up
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            stop(proc)
        if mid_save is not None:   # killed inside a save: its temporary file stays, the model is untouched
            assert len(_temps(tmp_path, "k.npz")) == 1 and path.read_bytes() == mid_save
        assert len(_temps(tmp_path, "k.npz")) <= 1, "stale temporary files pile up"
        if path.exists():
            m = charstream.load(path)   # the old model or the new one, never a torn file
            assert m.state.chars_seen >= seen and m.state.chunks >= chunks
            seen, chunks = m.state.chars_seen, m.state.chunks
    assert seen > 0
    # A clean run after all that: resumes, saves, and leaves neither temporary files nor the lock.
    r = run(cli("train", "-", "--model", path, *QUIET), input=long_text[:3000].encode())
    assert r.returncode == 0, r.stderr
    assert charstream.load(path).state.chars_seen == seen + 3000
    assert sorted(os.listdir(tmp_path)) == ["k.npz", "text.txt"]


def _reference(text, seed, H=8):
    ref = charstream.Model("", hidden_size=H, seed=seed)
    list(charstream.Trainer(ref).train([text]))
    return ref


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
        proc = popen(cli("train", "-", "--model", path, "--hidden-size", "8", "--random-seed", "5",
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
            stop(proc)
        assert code in codes.values(), err
        assert "Traceback" not in err
        assert err.splitlines()[-1] == f"interrupted: saved model to {path}"
        m = charstream.load(path)
        assert m.state.chunks > 0
        list(charstream.Trainer(m).train([text[m.state.chars_seen:]]))
        assert_same_model(m, ref)


def test_resume_in_a_new_process_equals_one_process_to_the_bit(tmp_path, shakespeare):
    """A, then B in a new process == A+B in one process, for every array and every meta field.

    A's length is not a multiple of seq_length (its tail carries over) and B brings characters A
    never had. Only the training curve's wall-clock seconds are left out (helpers.assert_same_file).
    """
    a = shakespeare[:3013]
    b = "ÆØÅ ünïcödé → ∑ 🙂 " + shakespeare[3013:5000]
    assert len(a) % 25 and not set("ÆØÅ🙂∑") & set(a)
    common = ["--hidden-size", "12", "--random-seed", "4", "--seq-length", "25", *QUIET]
    (tmp_path / "a.txt").write_text(a, encoding="utf-8")
    split, whole = tmp_path / "split.npz", tmp_path / "whole.npz"
    assert run(cli("train", tmp_path / "a.txt", "--model", split, *common)).returncode == 0
    assert charstream.load(split).state.tail.size == (len(a) - 1) % 25 + 1
    r = run(cli("train", "-", "--model", split, *QUIET), input=b.encode())
    assert r.returncode == 0, r.stderr
    r = run(cli("train", "-", "--model", whole, *common), input=(a + b).encode())
    assert r.returncode == 0, r.stderr
    assert_same_file(split, whole)


def test_one_writer_many_readers_and_no_stale_lock_after_kill_9(tmp_path, shakespeare):
    path = tmp_path / "w.npz"
    writer = popen(cli("train", "-", "--model", path, "--hidden-size", "8", "--checkpoint-every", "0.05",
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
        second = run(cli("train", "-", "--model", path), input=b"other text " * 10, timeout=30)
        assert second.returncode == 1
        assert second.stderr.decode() == (
            f"Error: {path} is being trained by another charstream process (pid {writer.pid}); "
            f"wait for it to end, or train another --model\n")
        reader = run(cli("generate", "--model", path, "--length", "50", "--random-seed", "1"), timeout=30)
        assert reader.returncode == 0 and len(reader.stdout.decode()) == 50
        assert writer.poll() is None
        writer.kill()
        writer.wait(timeout=30)
    finally:
        stop(writer)
    assert (tmp_path / "w.npz.lock").exists()   # the file stays after kill -9, the lock does not
    again = run(cli("train", "-", "--model", path, *QUIET), input=shakespeare[4000:5000].encode())
    assert again.returncode == 0, again.stderr
    assert not (tmp_path / "w.npz.lock").exists()


def _signal_set(pid, field, sig):
    """Whether `sig` is in the /proc/PID/status mask `field` (SigIgn: ignored, SigCgt: caught)."""
    with open(f"/proc/{pid}/status") as f:
        mask = int(re.search(rf"^{field}:\s+([0-9a-f]+)$", f.read(), re.M).group(1), 16)
    return bool(mask >> (sig - 1) & 1)


def _blocked_in_pipe_write(pid):
    """Whether the process sleeps in the kernel's pipe write (a full pipe): /proc/PID/wchan."""
    with open(f"/proc/{pid}/wchan") as f:
        return "pipe_write" in f.read()


def _train_small(path, shakespeare):
    """A small trained model at path, made by the command in its own process."""
    r = run(cli("train", "-", "--model", path, "--hidden-size", "8", *QUIET), input=shakespeare[:2000].encode())
    assert r.returncode == 0, r.stderr


def test_generate_stops_cleanly_on_sigterm(tmp_path, shakespeare):
    path = tmp_path / "g.npz"
    _train_small(path, shakespeare)
    for sig, expected in ((signal.SIGTERM, 0), (signal.SIGINT, 130)):
        gen = popen(cli("generate", "--model", path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert gen.stdout.read(100)   # it is writing
            gen.send_signal(sig)
            gen.stdout.close()
            assert gen.wait(timeout=30) == expected
            assert gen.stderr.read() == b""
        finally:
            stop(gen)


def test_stdin_closed_or_empty(tmp_path):
    path = tmp_path / "c.npz"
    closed = subprocess.run(cli("train", "-", "--model", path), cwd=DATA, capture_output=False,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=60,
                            preexec_fn=lambda: os.close(0))
    assert closed.returncode == 1
    assert closed.stderr.decode() == "Error: <stdin>: stdin is closed\n"
    empty = run(cli("train", "-", "--model", path), input=b"")
    assert empty.returncode == 1
    assert empty.stderr.decode() == "Error: no text to train on: - gave no characters; the model was not changed\n"
    assert not path.exists() and os.listdir(tmp_path) == []


def test_ten_megabytes_without_a_newline_train_as_they_arrive(tmp_path):
    """No line buffering: the first megabyte trains while the pipe is still open, and the whole
    stream is never held in memory."""
    path = tmp_path / "long.npz"
    piece = ("abcdefghij klmnopqrstuvwxyz " * 40_000)[:1_000_000].encode()
    proc = popen(cli("train", "-", "--model", path, "--hidden-size", "4", "--seq-length", "200",
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
        stop(proc)
    assert peak_kb < 150_000, f"{peak_kb} kB: the stream seems to be held in memory"
    assert charstream.load(path).state.chars_seen == 10_000_000


@pytest.mark.parametrize("how", ["at start", "while running"])
def test_train_with_stderr_closed_still_saves(tmp_path, shakespeare, how):
    """`charstream train ... 2>&-` and `charstream train ... 2>&1 | head -0`: progress cannot be
    written, the run still ends with exit 0 and the whole text trained and saved."""
    code, m = train_with_stderr_closed(tmp_path, shakespeare[:5000], how)
    assert code == 0
    assert m.state.chars_seen == 5000 and m.state.chunks == 199


def test_sighup_saves_like_sigterm_unless_ignored_as_under_nohup(tmp_path, shakespeare):
    for ignored in (False, True):
        path = tmp_path / f"h{ignored}.npz"
        proc = popen(cli("train", "-", "--model", path, "--hidden-size", "8", "--report-every", "0",
                           "--sample-every", "0", "--checkpoint-every", "0"),
                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                      preexec_fn=(lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if ignored else None)
        try:
            proc.stdin.write(shakespeare[:3000].encode())
            proc.stdin.flush()
            _wait_for_line(proc)
            # ignored: the kernel drops the signal (the process cannot even see it); else it is caught
            assert _signal_set(proc.pid, "SigIgn" if ignored else "SigCgt", signal.SIGHUP)
            proc.send_signal(signal.SIGHUP)
            if ignored:   # it trains on: the next text arrives and trains, then SIGTERM ends it
                proc.stdin.write(shakespeare[3000:4000].encode())
                proc.stdin.flush()
                _wait_for_line(proc, b"chunks 159 ")   # (4000 - 1) // 25 chunks
                proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        finally:
            stop(proc)
        assert code == (143 if ignored else 129)
        assert charstream.load(path).state.chars_seen == (4000 if ignored else 3000)


def test_a_file_size_limit_while_saving_keeps_the_old_model(tmp_path, shakespeare):
    """A real write failure in a real process (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC):
    checkpoints warn once and training goes on; the final save fails with one error; the old
    model is intact and no temporary file is left."""
    import resource
    path = tmp_path / "f.npz"
    assert run(cli("train", "-", "--model", path, "--hidden-size", "8", *QUIET),
                input=shakespeare[:3000].encode()).returncode == 0
    before = path.read_bytes()
    limit = len(before) + 200   # new characters make the next save bigger than this

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run(cli("train", "-", "--model", path, "--checkpoint-every", "0.0001", *QUIET), cwd=DATA,
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
        gen = popen(cli("generate", "--model", path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert gen.stdout.read(10)
            # nobody reads: the pipe fills and generate blocks in write(), asleep in the kernel's pipe_write
            wait_until(lambda: _blocked_in_pipe_write(gen.pid), what="generate blocking on the full pipe")
            gen.send_signal(sig)
            assert gen.wait(timeout=30) == expected
            assert gen.stderr.read() == b""
        finally:
            stop(gen)
