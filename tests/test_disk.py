"""A real full disk and a real read-only directory (a small tmpfs, mounted for the test: root only):
training's save fails with one clear line and a non-zero exit, the model file before it stays intact
and loadable, and `generate` and a server beside it are unaffected.

Without the right to mount the test skips, unless CI is set (CI runs as root): then it fails."""
import os
import subprocess

import pytest

import charstream
from helpers import invoke


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs at tmp_path/disk, unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        reason = f"cannot mount a tmpfs (needs root): {r.stderr.strip() or r.returncode}"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def _fill(folder):
    """Write until the file system has no byte left."""
    with open(folder / "filler", "wb", buffering=0) as f:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass


def _one_error(r):
    lines = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert r.exit_code == 1 and len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


def test_a_full_disk_keeps_the_last_good_model(small_disk, shakespeare):
    path = small_disk / "m.npz"
    assert invoke("train", "-", "--model", path, "--hidden-size", "8", input=shakespeare[:2000]).exit_code == 0
    before = path.read_bytes()
    served = charstream.load(path)
    from charstream.server.models import ModelRegistry
    lines = []
    registry = ModelRegistry(path, log=lines.append)
    (small_disk / "reserve").write_bytes(b"\0" * 4096)   # one page: room for the lock file, not for the model
    _fill(small_disk)
    (small_disk / "reserve").unlink()
    assert _one_error(invoke("train", "-", "--model", path, input=shakespeare[2000:6000])) == \
        f"Error: saving {path} failed: No space left on device; {path} keeps its last good save"
    assert path.read_bytes() == before
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "m.npz"]   # no temporary or lock file left
    assert charstream.load(path).state.chars_seen == served.state.chars_seen == 2000
    r = invoke("generate", "--model", path, "--length", "50", "--random-seed", "1")
    assert r.exit_code == 0 and len(r.stdout) == 50
    assert registry.current() is registry.model and lines == []
    # no byte left at all: not even the lock file can be written, and nothing is left behind
    _fill(small_disk)
    assert _one_error(invoke("train", "-", "--model", small_disk / "new.npz", input=shakespeare[:2000])) == \
        f"Error: {small_disk}: No space left on device: the model could not be saved there"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "m.npz"]


def test_a_read_only_directory_keeps_the_last_good_model(small_disk, shakespeare):
    path = small_disk / "m.npz"
    assert invoke("train", "-", "--model", path, "--hidden-size", "8", input=shakespeare[:2000]).exit_code == 0
    before = path.read_bytes()
    r = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert _one_error(invoke("train", "-", "--model", path, input=shakespeare[2000:4000])) == \
        f"Error: {small_disk}: read-only file system: the model could not be saved there"
    assert path.read_bytes() == before and charstream.load(path).state.chars_seen == 2000
    assert invoke("generate", "--model", path, "--length", "20").exit_code == 0
