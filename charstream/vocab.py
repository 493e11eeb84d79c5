"""The vocabulary: characters in index order (`itos`), their indices (`stoi`), and text to indices."""
import numpy as np

MAX_CODEPOINT = 0x110000


def codepoints(text):
    """Equivalent to `np.array([ord(c) for c in text], dtype=np.uint32)`, without the Python loop."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint32)


def to_text(cps):
    """Inverse of `codepoints`."""
    return np.asarray(cps, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")


class Vocab:
    """An ordered set of distinct characters that only grows, with a code-point lookup table."""

    def __init__(self, chars=()):
        self.itos = []
        self.stoi = {}
        self._lut = np.full(MAX_CODEPOINT, -1, dtype=np.int32)  # code point -> index, -1 unknown
        self._cps = np.empty(0, dtype=np.uint32)                  # (V,) index -> code point
        self.add(chars)

    def __len__(self):
        return len(self.itos)

    def __contains__(self, ch):
        return ch in self.stoi

    def add(self, chars):
        """Append the characters not yet known, in the order given; return the ones appended."""
        new = []
        for ch in chars:
            if not isinstance(ch, str) or len(ch) != 1:
                raise ValueError(f"a vocabulary holds single characters, got {ch!r}")
            if ch in self.stoi:
                continue
            self.stoi[ch] = len(self.itos)
            self.itos.append(ch)
            self._lut[ord(ch)] = self.stoi[ch]
            new.append(ch)
        if new:
            self._cps = np.concatenate([self._cps, codepoints("".join(new))])
        return new

    def lookup(self, cps):
        """(n,) uint32 code points -> (n,) int32 indices, -1 where a character is not known."""
        return self._lut[cps]

    def decode(self, idx):
        """(n,) indices -> the string they spell."""
        return to_text(self._cps[idx])

    def encode(self, text):
        """The indices of `text`, -1 for characters not in the vocabulary."""
        return self.lookup(codepoints(text))
