"""Files and stdin as sources: paths checked before training, read as their bytes arrive."""
import os
import stat
import sys
from urllib.parse import unquote

from ..errors import CharstreamError
from .decode import BLOCK, read_stream


def check_path(path):
    """Raise CharstreamError now if `path` is missing, a directory or unreadable."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CharstreamError(f"{path}: no such file") from None
    except PermissionError:
        raise CharstreamError(f"{path}: permission denied") from None
    except OSError as e:
        raise CharstreamError(f"{path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise CharstreamError(f"{path}: is a directory, not a text file")
    if not os.access(path, os.R_OK):
        raise CharstreamError(f"{path}: permission denied")


def read_path(path):
    """Yield the text of the file at `path` as it is read (checked first, like `check_path`)."""
    check_path(path)
    try:
        f = open(path, "rb", buffering=0)
    except OSError as e:
        raise CharstreamError(f"{path}: {e.strerror}") from None
    with f:
        yield from read_stream(f, path, BLOCK * 16)


def file_path(source):
    """The path of `file://PATH` (`file:///abs`, `file://localhost/abs`, `file://rel`), %-escapes decoded."""
    rest = source[len("file://"):]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost"):]
    return unquote(rest)


def path_of(source, scheme):
    """The path a file source reads: PATH itself (scheme None), or the PATH of file://PATH (any case
    of the scheme); None for any other scheme."""
    if scheme is None:
        return source
    if scheme == "file":
        return file_path("file://" + source.split("://", 1)[1])
    return None


def open_file(source):
    """The `file` source: `file:///abs/path` or `file://relative/path`, read like a path."""
    return read_path(file_path(source))


def check_stdin():
    """Raise CharstreamError if there is no stdin to read."""
    if sys.stdin is None:
        raise CharstreamError("<stdin>: stdin is closed")


def open_stdin():
    """Yield the text of stdin as its bytes arrive."""
    check_stdin()
    try:   # unbuffered: a reader thread blocked on it must not hold a lock at exit
        stdin = open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
    except (AttributeError, OSError, ValueError):   # a stdin without a descriptor (tests)
        stdin = sys.stdin.buffer
    return read_stream(stdin, "<stdin>")
