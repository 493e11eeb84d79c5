"""Scoring text without training: cross-entropy over the whole stream and over fresh-state windows."""
import math
import numbers
import statistics
from dataclasses import dataclass, field

import numpy as np

from .vocab import UNK, codepoints

LN2 = math.log(2)


@dataclass
class Score:
    """What `score` measured. Per-char figures are means over the characters predicted."""

    predicted: int = 0          # characters predicted (each known character after the first)
    nats: float = 0.0           # their summed cross-entropy, hidden state carried through the text
    unknown: int = 0            # characters outside the vocabulary, skipped (not scored)
    window: int = 0             # window length in characters
    windows: list = field(default_factory=list)  # nats/char of each full window, scored from h = 0
    as_unk: int = 0             # characters outside the vocabulary read as U+FFFD (scored as U+FFFD)
    known: int = 0              # characters scored or used as context (predicted + 1, if any)

    @property
    def nats_per_char(self):
        return self.nats / self.predicted if self.predicted else math.nan

    @property
    def bits_per_char(self):
        return self.nats_per_char / LN2

    @property
    def perplexity(self):
        return math.exp(self.nats_per_char)

    @property
    def median_window(self):
        """Median nats/char over the windows (the whole-text score when there is no full window)."""
        return statistics.median(self.windows) if self.windows else self.nats_per_char


def score(model, texts, window=2000):
    """Score an iterable of str with `model`, streaming: nothing is trained and the text is never held
    whole. Characters the model has never seen are counted in `unknown` and skipped.

    A vanilla RNN's hidden state can saturate on a long text unlike its training data, so besides the
    whole-text score each full window of `window` characters is also scored from a fresh state
    (`window=None`: the whole-text score alone, half the work).
    """
    if window is not None and (isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 2):
        raise ValueError(f"window must be at least 2 characters, got {window!r}")
    result = Score(window=window or 0)
    kernel = model.kernel()
    h = np.zeros(len(model.state.hprev))
    last = np.empty(0, dtype=np.int32)      # the previous known character: the next text's context
    pending = np.empty(0, dtype=np.int32)   # known characters of the window being filled
    for text in texts:
        idx = model.vocabulary.encode(text)
        known = np.ascontiguousarray(idx[idx >= 0], dtype=np.int32)
        result.unknown += len(idx) - len(known)
        result.known += len(known)
        unk = model.vocabulary.stoi.get(UNK)
        if unk is not None:
            result.as_unk += int(np.count_nonzero((idx == unk) & (codepoints(text) != ord(UNK))))
        if not len(known):
            continue
        seq = np.concatenate([last, known])
        if len(seq) >= 2:
            result.nats += kernel.evaluate(seq, h)   # h has now read seq[:-1]
            result.predicted += len(seq) - 1
        last = seq[-1:]                             # ... and reads seq[-1] with the next text
        if window is None:
            continue
        pending = np.concatenate([pending, known])
        while len(pending) >= window:
            w, pending = pending[:window], pending[window:]
            result.windows.append(kernel.evaluate(np.ascontiguousarray(w), np.zeros(len(model.state.hprev)))
                                  / (window - 1))
    return result
