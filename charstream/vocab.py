"""The vocabulary: characters in index order (`itos`), their indices (`stoi`), and text to indices.

An open vocabulary grows as new characters arrive, up to `max_size` characters. The last slot is
kept for UNK (U+FFFD, the character invalid UTF-8 is replaced with too): once the others are taken,
every further new character maps to UNK, which joins the first time that happens. A fixed vocabulary
never grows; characters outside it map to UNK if it holds UNK, else they cannot be encoded (-1).
"""
import numpy as np

MAX_CODEPOINT = 0x110000
UNK = "\ufffd"           # the unknown symbol: past the cap, outside a fixed vocabulary, invalid UTF-8
DEFAULT_MAX_VOCAB = 4096  # default cap: ~3 MB of weights per 100 hidden units, any script fits


def codepoints(text):
    """Equivalent to `np.array([ord(c) for c in text], dtype=np.uint32)`, without the Python loop."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint32)


def replace_surrogates(cps):
    """Set the lone surrogates in `cps` (code points U+D800..U+DFFF, which is what undecodable bytes
    become in text read with errors="surrogateescape", e.g. `sys.stdin` under LANG=C) to U+FFFD, in
    place, as the byte sources do with bytes that are not UTF-8. Return how many there were."""
    bad = (cps >= 0xD800) & (cps <= 0xDFFF)
    n = int(np.count_nonzero(bad))
    if n:
        cps[bad] = ord(UNK)
    return n


def to_text(cps):
    """Inverse of `codepoints`."""
    return np.asarray(cps, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")


def check_max_size(max_size):
    if isinstance(max_size, bool) or not isinstance(max_size, (int, np.integer)) or max_size < 1:
        raise ValueError(f"max_vocab must be a positive integer, got {max_size!r}")
    return int(max_size)


class Vocab:
    """An ordered set of distinct characters that only grows, with a code-point lookup table."""

    def __init__(self, chars=(), max_size=DEFAULT_MAX_VOCAB, fixed=False):
        self.itos = []
        self.stoi = {}
        self._lut = np.full(MAX_CODEPOINT, -1, dtype=np.int32)  # code point -> index, -1 unknown
        self._cps = np.empty(0, dtype=np.uint32)                  # (V,) index -> code point
        self.max_size = check_max_size(max_size)
        self.fixed = False
        self.capped = False   # set once a character has been mapped to UNK for want of room
        self.add(chars, force=True)
        if len(self.itos) > self.max_size:
            raise ValueError(f"the vocabulary has {len(self.itos)} characters, more than max_vocab={max_size}")
        self.fixed = bool(fixed)

    def __len__(self):
        return len(self.itos)

    def __contains__(self, ch):
        return ch in self.stoi

    @property
    def closed(self):
        """True when characters outside the vocabulary can never be encoded: it cannot grow and
        holds no UNK. Then the mapping is fixed for good, and such characters are dropped."""
        return UNK not in self.stoi and (self.fixed or len(self.itos) >= self.max_size)

    def _join(self, ch):
        self.stoi[ch] = len(self.itos)
        self.itos.append(ch)
        self._lut[ord(ch)] = self.stoi[ch]

    def add(self, chars, force=False):
        """Resolve the characters not yet known, in the order given: each joins while there is room
        (the last slot is kept for UNK); past that it maps to UNK, which joins if it has not. In a
        fixed vocabulary nothing joins. Return the characters that joined, in order."""
        new = []
        for ch in chars:
            if not isinstance(ch, str) or len(ch) != 1:
                raise ValueError(f"a vocabulary holds single characters, got {ch!r}")
            if self._lut[ord(ch)] >= 0:
                continue
            if force or (not self.fixed and (len(self.itos) < self.max_size - 1
                                             or (ch == UNK and len(self.itos) < self.max_size))):
                self._join(ch)
                new.append(ch)
                continue
            if UNK not in self.stoi and not self.fixed and len(self.itos) < self.max_size:
                self._join(UNK)
                new.append(UNK)
            if UNK in self.stoi:
                self._lut[ord(ch)] = self.stoi[UNK]   # this character now reads as UNK for good
                self.capped = self.capped or not self.fixed
        if new:
            self._cps = np.concatenate([self._cps, codepoints("".join(new))])
        return new

    def forget_unk_readings(self):
        """Undo "reads as UNK for good" for characters that are not UNK itself: after the cap is
        raised or the vocabulary reopened they may join, exactly as after saving and loading."""
        unk = self.stoi.get(UNK)
        if unk is not None:
            self._lut[self._lut == unk] = -1
            self._lut[ord(UNK)] = unk
        self.capped = False

    def lookup(self, cps):
        """(n,) uint32 code points -> (n,) int32 indices, -1 where a character is not resolved yet."""
        return self._lut[cps]

    def decode(self, idx):
        """(n,) indices -> the string they spell."""
        return to_text(self._cps[idx])

    def encode(self, text):
        """The indices of `text` as the vocabulary stands, without growing it: known characters,
        UNK for the ones that could no longer join, -1 for the rest."""
        cps = codepoints(text)
        replace_surrogates(cps)
        idx = self.lookup(cps)
        if UNK in self.stoi and (self.fixed or len(self.itos) >= self.max_size - 1):
            idx[idx < 0] = self.stoi[UNK]
        return idx
