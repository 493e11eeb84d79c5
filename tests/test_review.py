"""Regression tests for problems found in the final review: closed stdio, later sources that fail,
budgets that end before any text."""
import socket
import subprocess
import sys

from click.testing import CliRunner

import charstream
from charstream.cli import main


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "charstream", *map(str, args)], capture_output=True,
                          timeout=60, **kw)


def test_train_with_stderr_closed_at_start_still_saves(tmp_path, shakespeare):
    (tmp_path / "a.txt").write_text(shakespeare[:3000])
    r = subprocess.run(f'"{sys.executable}" -m charstream train a.txt --model m.npz --hidden-size 8 2>&-',
                       shell=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 0
    assert charstream.load(tmp_path / "m.npz").state.chars_seen == 3000


def test_generate_with_stdout_closed_is_one_error(tmp_path, shakespeare):
    assert CliRunner().invoke(main, ["train", "-", "--model", str(tmp_path / "m.npz"), "--hidden-size", "8"],
                              input=shakespeare[:1000]).exit_code == 0
    r = subprocess.run(f'"{sys.executable}" -m charstream generate --model m.npz --length 10 >&-',
                       shell=True, cwd=tmp_path, capture_output=False, stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 1
    assert r.stderr.decode().strip() == "Error: stdout is closed: there is nowhere to write the text"


def test_a_later_source_that_cannot_connect_keeps_the_earlier_training(tmp_path, shakespeare):
    with socket.socket() as s:   # a port with nothing listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "a.txt").write_text(shakespeare[:2000])
    r = CliRunner().invoke(main, ["train", str(tmp_path / "a.txt"), f"tcp://127.0.0.1:{port}",
                                  "--model", str(tmp_path / "m.npz"), "--hidden-size", "8"])
    assert r.exit_code == 1
    assert "connection refused" in r.stderr and "what was trained before it is saved to" in r.stderr
    assert charstream.load(tmp_path / "m.npz").state.chars_seen == 2000


def test_a_time_budget_with_no_client_exits_0_saying_so(tmp_path):
    r = _cli("train", "--listen", "127.0.0.1:0", "--max-seconds", "0.5", "--model", tmp_path / "l.npz",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    last = r.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("stopped after --max-seconds 0.5: no text arrived from --listen 127.0.0.1:")
    assert not (tmp_path / "l.npz").exists()
