"""Text sources: paths and stdin read as bytes arrive and decoded incrementally as UTF-8.

Bytes that are not UTF-8 are replaced by U+FFFD; the first such byte of each source is reported
once, with its byte offset, as a CharstreamWarning. A source that does not look like text is
refused with a CharstreamError: a NUL byte in its first SNIFF bytes (as git and grep decide that a
file is binary), or more than MAX_INVALID of those bytes not UTF-8 (another encoding, or binary).
Later NULs are characters like any other.
"""
import codecs
import os
import queue
import stat
import sys
import threading
import warnings

from .errors import CharstreamError, CharstreamWarning

BLOCK = 1 << 16     # bytes per read: a pipe's read returns as soon as anything has arrived
SNIFF = 8000        # bytes at the start of each source checked for signs of a binary file
MAX_INVALID = 0.25  # share of those bytes that may be invalid UTF-8


class Utf8Decoder:
    """Incremental UTF-8 decoding that reports the first invalid byte's offset, then replaces."""

    def __init__(self, name, defer_warning=False):
        self.name = name
        self.offset = 0  # bytes fed so far
        self._dec = codecs.getincrementaldecoder("utf-8")("strict")
        self.replacing = False
        self.defer_warning = defer_warning  # keep the warning for `warn()`, e.g. until a TextSniffer decides
        self.pending_warning = None

    def decode(self, data, final=False):
        state = self._dec.getstate()
        try:
            text = self._dec.decode(data, final)
        except UnicodeDecodeError as e:
            where = self.offset - len(state[0]) + e.start
            self.pending_warning = (f"{self.name}: invalid UTF-8 at byte {where}, replaced with U+FFFD "
                                    f"(and so are any further invalid bytes)")
            if not self.defer_warning:
                self.warn()
            self._dec = codecs.getincrementaldecoder("utf-8")("replace")
            self._dec.setstate(state)
            self.replacing = True
            text = self._dec.decode(data, final)
        self.offset += len(data)
        return text

    def warn(self):
        if self.pending_warning:
            warnings.warn(self.pending_warning, CharstreamWarning, stacklevel=3)
            self.pending_warning = None


class TextSniffer:
    """Raises CharstreamError if the first SNIFF bytes of a source hold a NUL or are mostly not UTF-8.

    NULs are refused as soon as they arrive; the share of invalid UTF-8 is judged once SNIFF bytes
    (or the whole source, if shorter) have arrived. Text is never held back for it.
    """

    def __init__(self, name):
        self.name = name
        self.head = bytearray()
        self.done = False

    def feed(self, data, final=False):
        if self.done:
            return
        start = len(self.head)
        self.head += data[:SNIFF - start]
        nul = self.head.find(b"\0", start)
        if nul >= 0:
            raise CharstreamError(f"{self.name}: looks like a binary file (a NUL byte at byte {nul}); "
                                  f"charstream trains on UTF-8 text")
        if len(self.head) < SNIFF and not final:
            return
        self.done = True
        head = bytes(self.head)
        text = codecs.getincrementaldecoder("utf-8")("replace").decode(head, final)
        bad = text.count("\ufffd") - head.count("\ufffd".encode())   # U+FFFD spelt in UTF-8 is text
        if head and bad > MAX_INVALID * len(head):
            raise CharstreamError(f"{self.name}: does not look like UTF-8 text ({bad} of its first "
                                  f"{len(head)} bytes are not UTF-8: a binary file, or another encoding?)")


def check_source(source):
    """Raise CharstreamError now if a path source cannot be read, before any training starts."""
    if source == "-":
        if sys.stdin is None:
            raise CharstreamError("<stdin>: stdin is closed")
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
    dec = Utf8Decoder(name, defer_warning=True)   # no warning for a source then refused as binary
    sniff = TextSniffer(name)
    while True:
        data = read(block)
        if not data:
            break
        sniff.feed(data)
        text = dec.decode(data)
        if sniff.done:
            dec.warn()
        if text:
            yield text
    sniff.feed(b"", final=True)
    text = dec.decode(b"", final=True)
    dec.warn()
    if text:
        yield text


def open_source(source):
    """An iterable of str for a path or `-` (stdin), read lazily as the text arrives."""
    if source == "-":
        if sys.stdin is None:
            raise CharstreamError("<stdin>: stdin is closed")
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
