"""Scoring text: cross-entropy over the whole stream from the state training left, statically or
while adapting a copy of the model to the text (dynamic evaluation)."""
import copy
import math
import numbers
import statistics
from dataclasses import dataclass, field

import numpy as np

from .trainer import Trainer
from .vocab import UNK, codepoints

LN2 = math.log(2)


@dataclass
class Score:
    """What `score` measured. Per-char figures are means over the characters predicted."""

    predicted: int = 0          # characters predicted (each known character after the first)
    nats: float = 0.0           # their summed cross-entropy, hidden state carried through the text
    unknown: int = 0            # characters outside the vocabulary, skipped (not scored)
    window: int = 0             # window length in characters (0: no windows scored)
    windows: list = field(default_factory=list)  # nats/char of each full window, each from the start state
    as_unk: int = 0             # characters outside the vocabulary read as U+FFFD (scored as U+FFFD)
    known: int = 0              # characters scored or used as context (predicted + 1, if any)
    mode: str = "static"        # "static": the model as it is; "adapt": trained on each chunk after scoring it

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


def score(model, texts, window=None, fresh_state=False):
    """Score an iterable of str with `model`, streaming: nothing is trained and the text is never held
    whole. Characters the model has never seen are counted in `unknown` and skipped.

    The hidden state starts where training left it (`model.start_state`; zeros with `fresh_state`)
    and is carried through the whole text. With `window=N`, each full window of N characters is also
    scored on its own from that same start state (the spread over excerpts; twice the work).
    """
    if window is not None and (isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 2):
        raise ValueError(f"window must be at least 2 characters, got {window!r}")
    result = Score(window=window or 0)
    kernel = model.kernel()
    h0 = model.start_state(fresh_state)
    h = h0.copy()
    last = np.empty(0, dtype=np.int32)      # the previous known character: the next text's context
    pending = np.empty(0, dtype=np.int32)   # known characters of the window being filled
    for known in _known(model, texts, result):
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
            result.windows.append(kernel.evaluate(np.ascontiguousarray(w), h0.copy()) / (window - 1))
    return result


def score_adaptive(model, texts, learning_rate=None, fresh_state=False):
    """Dynamic evaluation: like `score`, but a copy of `model` trains on the text as it is scored,
    each chunk scored before it trains (test-then-train, the trainer's own prequential loss). The
    copy is thrown away: `model` is not changed. Its vocabulary stays as it is (unknown characters
    are counted and skipped, as `score` does); the characters after the last whole chunk are scored
    without training, so both modes score the same characters."""
    best, model.best = getattr(model, "best", None), None   # not copied: the twin only scores
    try:
        twin = copy.deepcopy(model)
    finally:
        model.best = best
    twin.fixed_vocab = True
    twin.dropout = 0.0   # dynamic evaluation trains without dropout
    st = twin.state
    st.tail = np.empty(0, dtype=np.uint32)        # the training stream's untrained rest is not this text
    st.hprev = twin.start_state(fresh_state)
    st.lanes, st.hlanes, st.round_step = 1, None, 0   # one stream, scored in order: one lane
    result = Score(mode="adapt")
    trainer = Trainer(twin, learning_rate=learning_rate)
    texts = (twin.vocabulary.decode(known) for known in _known(twin, texts, result))
    for record in trainer.train(texts):
        result.nats += record.loss
        result.predicted += record.seq_length
    rest = twin.vocabulary.lookup(st.tail).astype(np.int32)
    if len(rest) >= 2:
        result.nats += twin.kernel().evaluate(rest, st.hprev.copy())
        result.predicted += len(rest) - 1
    return result


def _known(model, texts, result):
    """The known characters of each text as int32 indices, counting the others in `result`."""
    unk = model.vocabulary.stoi.get(UNK)
    for text in texts:
        idx = model.vocabulary.encode(text)
        known = np.ascontiguousarray(idx[idx >= 0], dtype=np.int32)
        result.unknown += len(idx) - len(known)
        result.known += len(known)
        if unk is not None:
            result.as_unk += int(np.count_nonzero((idx == unk) & (codepoints(text) != ord(UNK))))
        if len(known):
            yield known
