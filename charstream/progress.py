"""Training progress on stderr: characters, chars/s, loss in nats and bits per char, live samples."""
import math
import sys
import time

LN2 = math.log(2)


class Progress:
    """Reports every `every` seconds; a sample of the live model every `sample_every` seconds.

    On a terminal the status line is rewritten in place; otherwise each report is a plain line.
    """

    def __init__(self, model, every=2.0, sample_every=30.0, sample_length=200, stream=None):
        self.model = model
        self.every, self.sample_every, self.sample_length = every, sample_every, sample_length
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = self.last = self.last_sample = time.monotonic()
        self.chars0 = model.state.chars_seen
        self._open_line = False

    def update(self, record, now=None):
        now = time.monotonic() if now is None else now
        if now - self.last >= self.every:
            self.report(record, now)
        if self.sample_every and now - self.last_sample >= self.sample_every:
            self.sample()
            self.last_sample = now

    def line(self, record, now):
        st = self.model.state
        rate = (st.chars_seen - self.chars0) / max(now - self.start, 1e-9)
        nats = record.smooth_loss / record.seq_length
        return (f"chars {st.chars_seen:,}  chunks {st.chunks:,}  {rate:,.0f} chars/s  "
                f"loss {nats:.3f} nats/char ({nats / LN2:.3f} bits/char)  V={record.vocab_size}")

    def report(self, record, now=None):
        now = time.monotonic() if now is None else now
        self.last = now
        text = self.line(record, now)
        if self.tty:
            self._write(f"\r\x1b[K{text}")
            self._open_line = True
        else:
            self._write(text + "\n")

    def sample(self):
        gen = self.model.generate(random_seed=self.model.state.chunks)
        text = "".join(next(gen) for _ in range(self.sample_length))
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
