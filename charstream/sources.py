"""Text sources: paths, stdin, TCP and plugin schemes, read as bytes arrive and decoded as UTF-8.

A source is a string: a path; `-` (stdin); `tcp://HOST:PORT` (connect, read until the peer closes);
`file://PATH`; or `SCHEME://...` for any scheme a plugin registers in the `charstream.sources` entry
point group (see `charstream.plugins`). `open_source` turns one into an iterable of str; `Listener`
accepts TCP connections one after another and reads each in turn.

Byte sources are decoded incrementally, so a character split across two reads or two packets
arrives whole. Bytes that are not UTF-8 are replaced by U+FFFD; the first such byte of each source
(each connection) is reported once, with its byte offset, as a CharstreamWarning. A stream that
ends in the middle of a character (a peer closing mid-character) ends with one U+FFFD, reported
the same way. A source that does not look like text is
refused with a CharstreamError: a NUL byte in its first SNIFF bytes (as git and grep decide that a
file is binary), or more than MAX_INVALID of those bytes not UTF-8 (another encoding, or binary).
Later NULs are characters like any other.
"""
import codecs
import os
import queue
import re
import socket
import stat
import sys
import threading
import warnings

from . import plugins
from .errors import CharstreamError, CharstreamWarning, SourceFailed, one_line

BLOCK = 1 << 16     # bytes per read: a pipe's read returns as soon as anything has arrived
SNIFF = 8000        # bytes at the start of each source checked for signs of a binary file
MAX_INVALID = 0.25  # share of those bytes that may be invalid UTF-8


class Utf8Decoder:
    """Incremental UTF-8 decoding that reports the first invalid byte's offset, then replaces."""

    def __init__(self, name, defer_warning=False):
        self.name = name
        self.offset = 0  # bytes fed so far
        self._dec = codecs.getincrementaldecoder("utf-8")("strict")
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


CONNECT_TIMEOUT = 30.0  # seconds to wait for a TCP connection; reads then wait as long as it takes
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme_of(source):
    """The URI scheme of a source (`tcp` for `tcp://...`), lowercased; None for a path or `-`."""
    m = _SCHEME.match(source)
    return m.group(1).lower() if m else None


def check_source(source):
    """Raise CharstreamError now if a source cannot be used (a path that cannot be read, a malformed
    address, a scheme no plugin serves, a broken plugin), before any training starts."""
    if source == "-":
        if sys.stdin is None:
            raise CharstreamError("<stdin>: stdin is closed")
        return
    scheme = scheme_of(source)
    if scheme == "file":
        return _check_path(_file_path(source))
    if scheme == "tcp":
        parse_address(source[len("tcp://"):], source)
    if scheme is not None:
        _opener(scheme, source)
        return
    _check_path(source)


def _opener(scheme, source):
    """The callable registered for `scheme`, loaded now; PluginError naming the source if none is."""
    if plugins.find(plugins.SOURCES, scheme) is None:
        known = ", ".join(plugins.names(plugins.SOURCES))
        raise plugins.PluginError(f"{source}: no source plugin serves the scheme {scheme!r} "
                                  f"(known schemes: {known}); a path with '://' in it can be given as ./PATH")
    return plugins.load(plugins.SOURCES, scheme)


def _check_path(source):
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
    """An iterable of str for a source string (path, `-`, `tcp://HOST:PORT`, `file://PATH` or a
    plugin's `SCHEME://...`), read lazily as the text arrives. A scheme's plugin is called now (so
    `tcp://` connects now); what it yields is checked and decoded as it is read."""
    scheme = scheme_of(source)
    if scheme is not None:
        opener = _opener(scheme, source)
        try:
            texts = opener(source)
            if isinstance(texts, (str, bytes, bytearray, memoryview)):
                texts = [texts]       # the whole text at once, not one character (or int) at a time
            it = iter(texts)
        except CharstreamError:
            raise
        except (Exception, SystemExit) as e:
            raise SourceFailed(f"{source}: the {scheme!r} source failed: {one_line(e)}") from None
        return _checked(it, source, scheme)
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
    _check_path(path)
    try:
        f = open(path, "rb", buffering=0)
    except OSError as e:
        raise CharstreamError(f"{path}: {e.strerror}") from None
    with f:
        yield from read_stream(f, path, BLOCK * 16)


def _checked(it, source, scheme):
    """A plugin's texts as str: bytes decoded as UTF-8 (incrementally), failures as CharstreamError."""
    dec = sniff = None
    try:
        for text in it:
            if isinstance(text, (bytes, bytearray, memoryview)):
                dec = dec or Utf8Decoder(source)
                sniff = sniff or TextSniffer(source)   # bytes from a plugin meet the binary policy too
                sniff.feed(bytes(text))
                text = dec.decode(bytes(text))
            elif not isinstance(text, str):
                raise CharstreamError(f"{source}: the {scheme!r} source yielded {type(text).__name__}, "
                                      f"not str")
            if text:
                yield text
        if dec is not None:
            sniff.feed(b"", final=True)
            text = dec.decode(b"", final=True)
            if text:
                yield text
    except CharstreamError:
        raise
    except OSError as e:
        raise SourceFailed(f"{source}: {e.strerror or one_line(e)}") from None
    except (Exception, SystemExit) as e:
        raise SourceFailed(f"{source}: the {scheme!r} source failed: {one_line(e)}") from None


def _file_path(source):
    from urllib.parse import unquote
    rest = source[len("file://"):]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost"):]
    return unquote(rest)


def open_file(source):
    """The `file` source: `file:///abs/path` or `file://relative/path`, read like a path."""
    return _read_path(_file_path(source))


def parse_address(address, what, listen=False):
    """(host, port) from `HOST:PORT` (`[::1]:PORT` for IPv6); port 0 only to listen (any free port)."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    lo = 0 if listen else 1
    if not sep or not host or not port.isdigit() or not lo <= int(port) <= 65535:
        example = "127.0.0.1:5000" if listen else "tcp://127.0.0.1:5000"
        raise CharstreamError(f"{what}: expected HOST:PORT with a port from {lo} to 65535, e.g. {example}")
    return host, int(port)


def open_tcp(source):
    """The `tcp` source: connect to `tcp://HOST:PORT` now, then yield its text until the peer closes."""
    host, port = parse_address(source[len("tcp://"):], source)
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except ConnectionRefusedError:
        raise SourceFailed(f"{source}: connection refused (nothing listening on {host}:{port}?)") from None
    except socket.gaierror:
        raise SourceFailed(f"{source}: unknown host {host!r}") from None
    except socket.timeout:
        raise SourceFailed(f"{source}: no answer within {CONNECT_TIMEOUT:g} s") from None
    except OSError as e:
        raise SourceFailed(f"{source}: cannot connect: {e.strerror or e}") from None
    sock.settimeout(None)   # a live stream may stay quiet for as long as it likes
    return _read_socket(sock, source)


def _read_socket(sock, name):
    with sock:
        try:
            yield from read_stream(sock.makefile("rb", buffering=0), name)
        except OSError as e:
            raise SourceFailed(f"{name}: connection dropped ({e.strerror or e})") from None


class Listener:
    """A TCP server bound now to `HOST:PORT` (port 0: any free one, see `.address`); iterating it
    accepts connections one after another and yields each one's text until its peer closes, forever
    (or `max_connections` times). A connection that drops is reported with a warning and the next
    one is accepted; each connection has its own UTF-8 decoder."""

    def __init__(self, address, max_connections=None, on_event=None):
        host, port = parse_address(address, f"--listen {address}", listen=True)
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.sock = socket.create_server((host, port), family=family)
        except socket.gaierror:
            raise CharstreamError(f"--listen {address}: unknown host {host!r}") from None
        except OSError as e:
            raise CharstreamError(f"cannot listen on {address}: {e.strerror or e}") from None
        bound_host, bound_port = self.sock.getsockname()[:2]
        self.address = f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
        self.max_connections = max_connections
        self.on_event = on_event or (lambda message: None)

    def __iter__(self):
        n = 0
        with self.sock:
            while self.max_connections is None or n < self.max_connections:
                conn, peer = self.sock.accept()
                n += 1
                name = "tcp connection from %s:%d" % peer[:2]
                self.on_event(f"{name}: open")
                try:
                    yield from _read_socket(conn, name)
                except CharstreamError as e:
                    warnings.warn(str(e), CharstreamWarning, stacklevel=2)
                else:
                    self.on_event(f"{name}: closed")

    def close(self):
        self.sock.close()


def chain_sources(sources):
    """One stream of str from several sources (source strings, or iterables of str), in order."""
    for source in sources:
        yield from (open_source(source) if isinstance(source, str) else source)


def with_idle(texts, every, on_idle, prefetch=4):
    """Yield from `texts` (read in a background thread), calling `on_idle()` in the caller's thread
    whenever no text has arrived for `every` seconds, e.g. to checkpoint while a pipe is quiet.

    When the caller stops early (closes this generator), the reader thread ends at its next text
    instead of waiting forever on a full queue (a read it is blocked in cannot be cut short).
    """
    q = queue.Queue(maxsize=prefetch)
    done, stop = object(), threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def reader():
        try:
            for text in texts:
                if not put(text):
                    return
            put(done)
        except BaseException as e:   # handed to the caller's thread, raised there
            put(_Raised(e))

    thread = threading.Thread(target=reader, name="charstream-reader", daemon=True)
    thread.start()
    try:
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
    finally:
        stop.set()


class _Raised:
    """An exception from the reader thread, in transit."""

    def __init__(self, error):
        self.error = error
