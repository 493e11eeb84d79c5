"""Incremental UTF-8 decoding of byte streams, and the sniffing that refuses binary input."""
import codecs
import warnings

from ..errors import CharstreamError, CharstreamWarning

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
