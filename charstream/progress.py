"""Training progress as figures: when a report is due, what it says (loss, speed, how far, time left), and the loss log."""
import collections
import csv
import itertools
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from .scoring import LN2

LOG_FIELDS = ("time", "elapsed_s", "chars_seen", "chars_trained", "chunks", "smooth_nats_per_char", "window_nats_per_char",
              "window_bits_per_char", "chars_per_s", "vocab_size", "val_nats_per_char", "best_val_nats_per_char")


@dataclass(frozen=True)
class Report:
    """One progress report of `charstream.train` (the loss log's fields, then how far the run is)."""

    time: float                   # Unix seconds
    elapsed_s: float              # seconds since the run began
    chars_seen: int               # characters received in all, read-ahead included
    chars_trained: int            # characters trained in all
    chunks: int                   # chunks trained in all
    smooth_nats_per_char: float   # min-char-rnn's smoothed loss, per character
    window_nats_per_char: float   # mean loss over the last `window` chunks
    window_bits_per_char: float
    chars_per_s: float            # characters trained per second in this run
    vocab_size: int
    window: int                   # chunks in the window figure
    fraction: Optional[float]     # how far through the run, 0 to 1 (None: a stream of unknown length)
    eta_s: Optional[float]        # seconds left, estimated (None: unknown)
    idle: bool                    # reported because the stream went quiet
    val_nats_per_char: Optional[float] = None        # the last validation loss (None: no validation text)
    best_val_nats_per_char: Optional[float] = None   # the lowest validation loss: the best model kept
    best_chars: Optional[int] = None                 # characters trained when the best was measured
    model: Any = field(repr=False, compare=False, default=None)   # the live model (whole: sample it if you like)

    def log_row(self):
        return {k: getattr(self, k) for k in LOG_FIELDS}   # not asdict: it would deep-copy the model


class Extent:
    """How far a run is through whichever of its known totals is furthest along: seconds
    (--max-seconds), characters read (--max-chars), bytes of the file sources (their sizes times
    --passes; bytes read are counted as the UTF-8 of the text trained on)."""

    def __init__(self, max_seconds=None, max_chars=None, total_bytes=None):
        self.max_seconds, self.max_chars, self.total_bytes = max_seconds, max_chars, total_bytes
        self.chars_read = self.bytes_read = 0   # this run's, counted as the trainer pulls text

    @property
    def known(self):
        return any(x is not None for x in (self.max_seconds, self.max_chars, self.total_bytes))

    def counted(self, texts):
        """`texts`, counted as they are taken (by the trainer: after the text before has trained)."""
        try:
            for text in texts:
                self.chars_read += len(text)
                if self.total_bytes is not None:
                    self.bytes_read += len(text.encode("utf-8", "surrogatepass"))
                yield text
        finally:
            close = getattr(texts, "close", None)
            if close is not None:
                close()

    def estimate(self, elapsed, chars_trained):
        """(fraction done, seconds left) after `elapsed` seconds and `chars_trained` characters
        trained in this run; (None, None) without a known total."""
        fractions, left = [], []
        if self.max_seconds is not None:
            fractions.append(elapsed / self.max_seconds)
            left.append(max(self.max_seconds - elapsed, 0.0))
        totals = [self.max_chars] if self.max_chars else []
        if self.total_bytes and self.bytes_read:   # a file's characters, from its bytes per character so far
            totals.append(self.total_bytes * self.chars_read / self.bytes_read)
        for total in totals:
            f = min(chars_trained / total, 1.0)
            fractions.append(f)
            left.append(elapsed * (1 - f) / f if f > 0 else math.inf)
        if not fractions:
            return None, None
        eta = min(left)
        return min(max(fractions), 1.0), (None if math.isinf(eta) else eta)


class Meter:
    """Decides when a report is due (every `every` seconds; and when the stream goes quiet after
    training, `idle`), computes it, writes it to `log` (an open text file: CSV rows when
    `log_format` is "csv", else JSON lines) and hands it to `callback`.

    Each chunk's loss is computed before the chunk trains, so the window figure (the mean over the
    last `window` chunks) is an honest test-then-train score of the stream.
    """

    def __init__(self, model, every=2.0, callback=None, window=100, log=None, log_format="jsonl",
                 extent=None, start=None):
        self.model, self.every, self.callback = model, every, callback
        self.extent = extent or Extent()
        self.start = self.last = time.monotonic() if start is None else start
        self.trained0 = model.state.chars_trained
        self._losses = collections.deque(maxlen=window)   # (loss, seq_length) of recent chunks
        self._record = self._reported = None
        self.last_report = None   # the Report made last
        self.log, self.log_format = log, log_format
        if log is not None and log_format == "csv":
            self._csv = csv.writer(log)
            if log.tell() == 0:
                self._csv.writerow(LOG_FIELDS)

    def update(self, record, now):
        """After each trained chunk."""
        self._losses.append((record.loss, record.seq_length))
        self._record = record
        if now - self.last >= self.every:
            self.report(now)

    def idle(self, now):
        """The stream is quiet: report what trained since the last report, if anything did."""
        if self._record is not None and self._record is not self._reported:
            self.report(now, idle=True)

    def report(self, now, idle=False):
        """Report the last record now, unless it was reported already."""
        self.last = now
        record = self._record
        if record is None or record is self._reported:
            return None
        self._reported = record
        r = self.last_report = self.figures(record, now, idle)
        if self.log is not None:
            row = r.log_row()
            if self.log_format == "csv":
                self._csv.writerow([row[k] for k in LOG_FIELDS])
            else:
                self.log.write(json.dumps(row) + "\n")
            self.log.flush()
        if self.callback is not None:
            self.callback(r)
        return r

    def window_loss(self, record=None):
        """The mean nats/char of the last `window` chunks (`record`'s included when given, not yet updated)."""
        losses = list(self._losses) + ([(record.loss, record.seq_length)] if record is not None else [])
        losses = losses[-self._losses.maxlen:]
        return sum(l for l, _ in losses) / sum(t for _, t in losses) if losses else math.nan

    def figures(self, record, now, idle=False):
        st = self.model.state
        elapsed = max(now - self.start, 1e-9)
        window = self.window_loss()
        v = getattr(self.model, "validation", None) or {}
        trained = st.chars_trained - self.trained0
        fraction, eta = self.extent.estimate(elapsed, trained)
        return Report(time=round(time.time(), 3), elapsed_s=round(elapsed, 3), chars_seen=st.chars_seen,
                      chars_trained=st.chars_trained, chunks=st.chunks,
                      smooth_nats_per_char=record.smooth_loss / record.seq_length, window_nats_per_char=window,
                      window_bits_per_char=window / LN2, chars_per_s=round(trained / elapsed, 1),
                      vocab_size=record.vocab_size, window=len(self._losses), fraction=fraction, eta_s=eta,
                      idle=idle, model=self.model, val_nats_per_char=v.get("loss"),
                      best_val_nats_per_char=v.get("best_loss"), best_chars=v.get("best_chars"))


def sample_text(model, length, prompt="", temperature=1.0, random_seed=None, fresh_state=False):
    """`length` characters from the live model, from a copy of its hidden state, with its own generator."""
    if model.vocab_size == 0:
        return ""
    return "".join(itertools.islice(model.generate(prompt, temperature, random_seed, fresh_state=fresh_state), length))
