"""Training progress on stderr (characters, chars/s, loss in nats and bits per char, live samples)
and, optionally, a loss log of one CSV or JSON line per report."""
import collections
import csv
import itertools
import json
import math
import sys
import time

from .scoring import LN2

LOG_FIELDS = ("time", "elapsed_s", "chars_seen", "chars_trained", "chunks", "smooth_nats_per_char", "window_nats_per_char",
              "window_bits_per_char", "chars_per_s", "vocab_size")


class Progress:
    """Reports every `every` seconds; a sample of the live model every `sample_every` seconds.

    Each chunk's loss is computed before the chunk trains, so the window figure (mean over the last
    `window` chunks) is an honest test-then-train score of the stream. On a terminal the status line
    is rewritten in place; otherwise each report is a plain line. `log` is an open text file that
    gets one row per report (CSV when `log_format` is "csv", else JSON lines).
    """

    def __init__(self, model, every=2.0, sample_every=30.0, sample_length=200, stream=None,
                 window=100, log=None, log_format="jsonl"):
        self.model = model
        self.every, self.sample_every, self.sample_length = every, sample_every, sample_length
        self.stream = stream if stream is not None else sys.stderr   # None: stderr closed (`2>&-`)
        self.tty = self.stream is not None and self.stream.isatty()
        self.start = self.last = self.last_sample = time.monotonic()
        self.trained0 = model.state.chars_trained
        self._open_line = False
        self._reported = None   # the record last reported: the end of a run does not repeat it
        self._losses = collections.deque(maxlen=window)   # (loss, seq_length) of recent chunks
        self.log, self.log_format = log, log_format
        if log is not None and log_format == "csv":
            self._csv = csv.writer(log)
            if log.tell() == 0:
                self._csv.writerow(LOG_FIELDS)

    def update(self, record, now=None):
        self._losses.append((record.loss, record.seq_length))
        now = time.monotonic() if now is None else now
        if now - self.last >= self.every:
            self.report(record, now)
        if self.sample_every and now - self.last_sample >= self.sample_every:
            self.sample()
            self.last_sample = now

    def figures(self, record, now):
        st = self.model.state
        elapsed = max(now - self.start, 1e-9)
        window = (sum(l for l, _ in self._losses) / sum(t for _, t in self._losses)
                  if self._losses else math.nan)
        trained = st.chars_trained
        return {"time": round(time.time(), 3), "elapsed_s": round(elapsed, 3), "chars_seen": st.chars_seen,
                "chars_trained": trained, "chunks": st.chunks, "smooth_nats_per_char": record.smooth_loss / record.seq_length,
                "window_nats_per_char": window, "window_bits_per_char": window / LN2,
                "chars_per_s": round((trained - self.trained0) / elapsed, 1), "vocab_size": record.vocab_size}

    def report(self, record, now=None):
        """One progress line and one log row for `record` (nothing if it was just reported)."""
        now = time.monotonic() if now is None else now
        self.last = now
        if record is self._reported:
            return
        self._reported = record
        f = self.figures(record, now)
        text = (f"chars {f['chars_trained']:,}  chunks {f['chunks']:,}  {f['chars_per_s']:,.0f} chars/s  "
                f"loss {f['smooth_nats_per_char']:.3f} nats/char ({f['smooth_nats_per_char'] / LN2:.3f} bits/char)  "
                f"last {len(self._losses)} chunks {f['window_bits_per_char']:.3f} bits/char  V={f['vocab_size']}")
        if self.tty:
            self._write(f"\r\x1b[K{text}")
            self._open_line = True
        else:
            self._write(text + "\n")
        if self.log is not None:
            if self.log_format == "csv":
                self._csv.writerow([f[k] for k in LOG_FIELDS])
            else:
                self.log.write(json.dumps(f) + "\n")
            self.log.flush()

    def sample(self):
        text = sample_text(self.model, self.sample_length, random_seed=self.model.state.chunks)
        self.close_line()
        self._write(f"----\n{text}\n----\n")

    def close_line(self):
        if self._open_line:
            self._write("\n")
            self._open_line = False

    def _write(self, s):
        if self.stream is None:
            return
        try:
            self.stream.write(s)
            self.stream.flush()
        except (OSError, ValueError):   # stderr closed (`2>&1 | head`): training matters more
            self.stream = None


def sample_text(model, length, seed="", temperature=1.0, random_seed=None, fresh_state=False):
    """`length` characters from the live model, from a copy of its hidden state, with its own generator."""
    if model.vocab_size == 0:
        return ""
    return "".join(itertools.islice(model.generate(seed, temperature, random_seed, fresh_state=fresh_state), length))
