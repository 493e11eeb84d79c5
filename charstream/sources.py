"""Text sources: paths and stdin read as bytes arrive and decoded incrementally as UTF-8.

Bytes that are not UTF-8 are replaced by U+FFFD; the first such byte of each source is reported
once, with its byte offset, as a CharstreamWarning.
"""
import codecs
import os
import queue
import stat
import sys
import threading
import warnings

from .errors import CharstreamError, CharstreamWarning

BLOCK = 1 << 16  # bytes per read: a pipe's read returns as soon as anything has arrived


class Utf8Decoder:
    """Incremental UTF-8 decoding that reports the first invalid byte's offset, then replaces."""

    def __init__(self, name):
        self.name = name
        self.offset = 0  # bytes fed so far
        self._dec = codecs.getincrementaldecoder("utf-8")("strict")
        self.replacing = False

    def decode(self, data, final=False):
        state = self._dec.getstate()
        try:
            text = self._dec.decode(data, final)
        except UnicodeDecodeError as e:
            where = self.offset - len(state[0]) + e.start
            warnings.warn(f"{self.name}: invalid UTF-8 at byte {where}, replaced with U+FFFD "
                          f"(and so are any further invalid bytes)", CharstreamWarning, stacklevel=2)
            self._dec = codecs.getincrementaldecoder("utf-8")("replace")
            self._dec.setstate(state)
            self.replacing = True
            text = self._dec.decode(data, final)
        self.offset += len(data)
        return text


def check_source(source):
    """Raise CharstreamError now if a path source cannot be read, before any training starts."""
    if source == "-":
        return
    try:
        st = os.stat(source)
    except FileNotFoundError:
        raise CharstreamError(f"{source}: no such file") from None
    except PermissionError:
        raise CharstreamError(f"{source}: permission denied") from None
    except OSError as e:
        raise CharstreamError(f"{source}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise CharstreamError(f"{source}: is a directory, not a text file")
    if not os.access(source, os.R_OK):
        raise CharstreamError(f"{source}: permission denied")


def read_stream(f, name, block=BLOCK):
    """Yield str from a binary file object as its bytes arrive (one read each), decoded as UTF-8."""
    read = getattr(f, "read1", f.read)
    dec = Utf8Decoder(name)
    while True:
        data = read(block)
        if not data:
            break
        text = dec.decode(data)
        if text:
            yield text
    text = dec.decode(b"", final=True)
    if text:
        yield text


def open_source(source):
    """An iterable of str for a path or `-` (stdin), read lazily as the text arrives."""
    if source == "-":
        try:   # unbuffered: a reader thread blocked on it must not hold a lock at exit
            stdin = open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
        except (AttributeError, OSError, ValueError):   # a stdin without a descriptor (tests)
            stdin = sys.stdin.buffer
        return read_stream(stdin, "<stdin>")
    return _read_path(source)


def _read_path(path):
    check_source(path)
    try:
        f = open(path, "rb", buffering=0)
    except OSError as e:
        raise CharstreamError(f"{path}: {e.strerror}") from None
    with f:
        yield from read_stream(f, path, BLOCK * 16)


def chain_sources(sources):
    """One stream of str from several sources, in order."""
    for source in sources:
        yield from open_source(source)


def with_idle(texts, every, on_idle, prefetch=4):
    """Yield from `texts` (read in a background thread), calling `on_idle()` in the caller's thread
    whenever no text has arrived for `every` seconds, e.g. to checkpoint while a pipe is quiet."""
    q = queue.Queue(maxsize=prefetch)
    done = object()

    def reader():
        try:
            for text in texts:
                q.put(text)
            q.put(done)
        except BaseException as e:   # handed to the caller's thread, raised there
            q.put(_Raised(e))

    threading.Thread(target=reader, name="charstream-reader", daemon=True).start()
    while True:
        try:
            item = q.get(timeout=every) if every else q.get()
        except queue.Empty:
            on_idle()
            continue
        if item is done:
            return
        if isinstance(item, _Raised):
            raise item.error
        yield item


class _Raised:
    """An exception from the reader thread, in transit."""

    def __init__(self, error):
        self.error = error
