"""The command line through click's CliRunner, and as a real process where pipes matter."""
import select
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import charstream
from charstream.cli import main
from charstream.vocab import Vocab
from helpers import cli, invoke, popen


@pytest.fixture
def run():
    def run(*args, input=None):
        return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    return run


@pytest.fixture
def trained(tmp_path, shakespeare, run):
    path = tmp_path / "m.npz"
    r = run("train", "-", "--model", str(path), "--hidden-size", "16", "--random-seed", "1",
            input=shakespeare[:3000])
    assert r.exit_code == 0, r.output
    return path


def test_train_from_stdin_then_generate(trained, run):
    assert f"saved model to {trained}" in CliRunner().invoke(
        main, ["train", "-", "--model", str(trained)], input="more text to learn from").stderr
    r = run("generate", "--model", str(trained), "--seed", "To be", "--length", "200", "--random-seed", "3")
    assert r.exit_code == 0
    assert r.stdout.startswith("To be") and len(r.stdout) == len("To be") + 200
    again = run("generate", "--model", str(trained), "--seed", "To be", "--length", "200", "--random-seed", "3")
    assert again.stdout == r.stdout


def test_train_files_in_order_equals_one_stream(tmp_path, shakespeare, run):
    (tmp_path / "a.txt").write_text(shakespeare[:1000])
    (tmp_path / "b.txt").write_text(shakespeare[1000:2500])
    r = run("train", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "--model", str(tmp_path / "ab.npz"),
            "--hidden-size", "8", "--random-seed", "0")
    assert r.exit_code == 0, r.output
    ref = charstream.Model("", hidden_size=8, seed=0)
    list(charstream.Trainer(ref).train([shakespeare[:2500]]))
    got = charstream.load(tmp_path / "ab.npz")
    np.testing.assert_array_equal(got.params["Whh"], ref.params["Whh"])
    assert got.vocab == ref.vocab


def test_default_model_location_follows_the_environment(tmp_path, run, monkeypatch):
    monkeypatch.setenv("CHARSTREAM_MODEL", str(tmp_path / "env.npz"))
    assert run("train", "-", "--hidden-size", "4", input="hello world, hello stream " * 4).exit_code == 0
    assert (tmp_path / "env.npz").exists()
    monkeypatch.delenv("CHARSTREAM_MODEL")
    assert run("train", "-", "--hidden-size", "4", input="hello world, hello stream " * 4).exit_code == 0
    assert (tmp_path / "xdg" / "charstream" / "model.npz").exists()


def test_progress_goes_to_stderr_in_plain_lines(tmp_path, shakespeare):
    r = CliRunner().invoke(main, ["train", "-", "--model", str(tmp_path / "p.npz"), "--hidden-size", "8",
                                  "--report-every", "0", "--sample-every", "0.000001"], input=shakespeare[:2000])
    assert r.exit_code == 0
    assert r.stdout == ""
    assert "nats/char" in r.stderr and "bits/char" in r.stderr and "chars/s" in r.stderr
    assert "----" in r.stderr and "\r" not in r.stderr


def _model_bytes(path):
    return path.read_bytes() if path.exists() else None


@pytest.mark.parametrize("args, input, msg", [
    (["train", "nope.txt"], None, "Error: nope.txt: no such file"),
    (["train", "{tmp}"], None, "is a directory"),
    (["train", "-"], "", "no text to train on"),
    (["generate", "--model", "{tmp}/missing.npz"], None, "no model at"),
    (["generate", "--model", "{tmp}/junk.npz"], None, "junk.npz: not a charstream model"),
    (["generate", "--model", "{model}", "--temperature", "-1"], None, "Invalid value for '--temperature'"),
    (["generate", "--model", "{model}", "--length", "-5"], None, "Invalid value for '--length'"),
    (["train", "-", "--model", "{model}", "--hidden-size", "0"], "abc", "Invalid value for '--hidden-size'"),
    (["train", "-", "--model", "{model}", "--hidden-size", "7"], "abcdefgh" * 10, "has hidden size 16"),
    (["train", "--bogus"], None, "No such option '--bogus'"),
])
def test_mistakes_get_one_clear_line_and_leave_the_model_alone(tmp_path, trained, args, input, msg):
    (tmp_path / "junk.npz").write_bytes(b"not a model at all")
    args = [a.format(tmp=tmp_path, model=trained) for a in args]
    before = trained.read_bytes()
    r = CliRunner().invoke(main, args, input=input)
    assert r.exit_code != 0
    assert msg in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert trained.read_bytes() == before


def test_invalid_utf8_is_replaced_with_one_warning(tmp_path, run):
    data = "good text ".encode() * 10 + b"\xff\xfe" + " more good text".encode() * 10 + b"\xc3"
    r = CliRunner().invoke(main, ["train", "-", "--model", str(tmp_path / "u.npz"), "--hidden-size", "4"],
                           input=data)
    assert r.exit_code == 0
    assert r.stderr.count("Warning:") == 1
    assert "invalid UTF-8 at byte 100" in r.stderr
    assert "\ufffd" in charstream.load(tmp_path / "u.npz").vocab


def test_help_shows_examples(run):
    for cmd in ("train", "generate", "corpus"):
        r = run(cmd, "--help")
        assert r.exit_code == 0 and "Example" in r.output and "charstream" in r.output


def test_generate_into_a_closed_pipe_ends_cleanly(trained):
    gen = popen(cli("generate", "--model", str(trained)), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    head = subprocess.run(["head", "-c", "100"], stdin=gen.stdout, capture_output=True, timeout=60)
    gen.stdout.close()
    err = gen.stderr.read()
    assert gen.wait(timeout=60) == 0
    assert len(head.stdout) == 100
    assert err == b""


def test_a_pipe_that_stays_open_keeps_training(tmp_path, shakespeare):
    path = tmp_path / "live.npz"
    proc = popen(cli("train", "-", "--model", str(path), "--hidden-size", "8",
                                 "--report-every", "0.1", "--checkpoint-every", "0.2", "--sample-every", "0"),
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(shakespeare[:5000].encode())
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.exists(), "no checkpoint while the pipe was open"
        assert proc.poll() is None
        assert charstream.load(path).state.chunks > 0
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert b"saved model to" in proc.stderr.read()


def test_sigterm_during_train_saves_and_exits_143(tmp_path, shakespeare):
    import signal
    path = tmp_path / "t.npz"
    proc = popen(cli("train", "-", "--model", str(path), "--hidden-size", "8",
                                 "--checkpoint-every", "0", "--report-every", "0", "--sample-every", "0"),
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(shakespeare[:3000].encode())
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stderr], [], [], 30)
        assert ready, "no progress line within 30 s"
        proc.stderr.readline()   # the first progress line: text has been trained
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
        assert b"saved model to" in proc.stderr.read()
    finally:
        proc.kill()
        proc.stdin.close()
    assert charstream.load(path).state.chars_seen == 3000


# -- output that cannot be written as asked (moved from test_qa.py and test_review.py)

def test_generate_writes_utf8_even_for_an_old_model_with_surrogates(tmp_path):
    m = charstream.Model("abc", hidden_size=8, seed=0)
    m.vocabulary = Vocab(["a", "\udcff", "\ud800"])        # as an older charstream could have saved
    m.params["by"][:] = [0.0, 5.0, 5.0]
    m.save(tmp_path / "old.npz")
    r = invoke("generate", "--model", tmp_path / "old.npz", "--length", "50", "--random-seed", "0")
    assert r.exit_code == 0, r.output
    out = r.stdout_bytes
    assert b"\xff" in out and "\ufffd".encode() in out
    assert out.replace(b"\xff", b"").decode("utf-8")


def test_generate_with_stdout_closed_is_one_error(tmp_path, shakespeare):
    assert CliRunner().invoke(main, ["train", "-", "--model", str(tmp_path / "m.npz"), "--hidden-size", "8"],
                              input=shakespeare[:1000]).exit_code == 0
    r = subprocess.run(f'"{sys.executable}" -m charstream generate --model m.npz --length 10 >&-',
                       shell=True, cwd=tmp_path, capture_output=False, stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 1
    assert r.stderr.decode().strip() == "Error: stdout is closed: there is nowhere to write the text"


def test_the_server_tests_fail_rather_than_skip_when_required(monkeypatch):
    """CI sets CHARSTREAM_REQUIRE_SERVER=1: a missing server extra is then a failure, never a skip."""
    import serving
    monkeypatch.setenv(serving.REQUIRE, "1")
    with pytest.raises(pytest.fail.Exception, match="CHARSTREAM_REQUIRE_SERVER=1 but no_such_module_x"):
        serving.require("no_such_module_x")
    monkeypatch.delenv(serving.REQUIRE)
    with pytest.raises(pytest.skip.Exception, match="no_such_module_x is not installed"):
        serving.require("no_such_module_x")
    assert serving.require("json").dumps(1) == "1"
