"""One writer per model: an `fcntl.flock` on `<model>.lock`, which the kernel drops when the holder dies.

Readers (`generate`) never lock: saves replace the model file atomically, so a reader sees the old
file or the new one. The lock file holds the writer's pid, for the message a second writer gets.
It is removed on release; a writer that locked a file removed meanwhile notices and locks afresh.
"""
import errno
import os

from .errors import CharstreamError

try:
    import fcntl
except ImportError:  # not POSIX: no lock, one writer is then up to the user
    fcntl = None


class ModelLocked(CharstreamError):
    """Another process is training the same model."""


def lock_path(path):
    return os.fspath(path) + ".lock"


class WriterLock:
    """`with WriterLock(path):` holds the model's writer lock, or raises ModelLocked at once."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.lock = lock_path(os.path.realpath(path))   # one lock however the model is named
        self.fd = None

    def acquire(self):
        if fcntl is None:
            return self
        while True:
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                pid = _read_pid(fd)
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    who = f" (pid {pid})" if pid else ""
                    raise ModelLocked(f"{self.path} is being trained by another charstream process{who}; "
                                      f"wait for it to end, or train another --model") from None
                raise
            try:   # the holder before us may have removed the file after we opened it
                same = os.fstat(fd).st_ino == os.stat(self.lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:   # a full disk: leave no lock file behind
            self.release()
            raise
        return self

    def release(self):
        if self.fd is None:
            return
        try:
            os.unlink(self.lock)   # while still holding it: see acquire
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self if self.fd is not None else self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
