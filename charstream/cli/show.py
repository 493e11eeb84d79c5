"""What `charstream train` prints as it trains: a progress bar on a terminal, plain lines on a pipe, live samples."""
import shutil
import sys
import time

import click

from ..progress import sample_text
from ..scoring import LN2

STEPS = 10_000   # the bar's resolution


def duration(seconds):
    """1:02:03 or 2:03 (minutes and seconds)."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def how_far(report):
    """"12% done, 0:41 left", or "" when the run's length is not known."""
    if report.fraction is None:
        return ""
    left = "" if report.eta_s is None else f", {duration(report.eta_s)} left"
    return f"{report.fraction:.0%} done{left}"


def validation(report):
    """"  val 1.234 (best 1.200)" nats/char, or the note that the stream's loss is held out as it comes."""
    if report.val_nats_per_char is None:
        return " (each chunk scored before it trains)"
    return f"  val {report.val_nats_per_char:.3f} (best {report.best_val_nats_per_char:.3f}) nats/char"


def line(report):
    """A report as one plain line (a pipe's, the log's reader's)."""
    f = report
    text = (f"chars {f.chars_trained:,}  chunks {f.chunks:,}  {f.chars_per_s:,.0f} chars/s  "
            f"loss {f.smooth_nats_per_char:.3f} nats/char ({f.smooth_nats_per_char / LN2:.3f} bits/char)  "
            f"last {f.window} chunks {f.window_bits_per_char:.3f} bits/char{validation(f)}  V={f.vocab_size}")
    far = how_far(report)
    return f"{text}  {far}" if far else text


class Printer:
    """The progress callback of `charstream train`: on a terminal, click's progress bar when the run's
    length is known (else a status line rewritten in place); on a pipe, one line per report. A sample
    of the live model every `sample_every` seconds (0: never), drawn between chunks."""

    def __init__(self, stream=None, sample_every=30.0, sample_length=200):
        self.stream = stream if stream is not None else sys.stderr   # None: stderr closed (`2>&-`)
        self.tty = self.stream is not None and self.stream.isatty()
        self.sample_every, self.sample_length = sample_every, sample_length
        self.last_sample = time.monotonic()
        self.bar = None
        self._open_line = False

    def __call__(self, report):
        if self.tty and report.fraction is not None:
            self._bar(report)
        elif self.tty:
            self._write(f"\r\x1b[K{line(report)}")
            self._open_line = True
        else:
            self._write(line(report) + "\n")
        now = time.monotonic()
        if self.sample_every and now - self.last_sample >= self.sample_every and report.model is not None:
            self.last_sample = now
            text = sample_text(report.model, self.sample_length, random_seed=report.chunks)
            self.close_line()
            self._write(f"----\n{text}\n----\n")

    def _bar(self, report):
        width = shutil.get_terminal_size((80, 24)).columns
        eta = "" if report.eta_s is None else f"  {duration(report.eta_s)} left"
        val = "" if report.val_nats_per_char is None else f"  val {report.val_nats_per_char:.3f} nats/char"
        text = (f"{report.window_bits_per_char:.3f} bits/char{val}{eta}  chars {report.chars_trained:,}  "
                f"{report.chars_per_s:,.0f}/s")[:max(width - 34, 10)]   # the bar and text never wrap
        try:
            if self.bar is None:
                self.bar = click.progressbar(length=STEPS, width=20, show_percent=True, show_eta=False,
                                             item_show_func=lambda t: t, file=self.stream)
            target = int(report.fraction * STEPS)
            self.bar.current_item = text
            self.bar.update(max(target - self.bar.pos, 0), text)
            self.bar.render_progress()
        except (OSError, ValueError):
            self.stream = None
        self._open_line = True

    def close_line(self):
        """End the status line or bar, so what follows starts on its own line."""
        if self._open_line and self.bar is not None:
            try:
                self.bar.render_finish()   # shows the cursor again, ends the line
            except (OSError, ValueError):
                self.stream = None
        elif self._open_line:
            self._write("\n")
        self._open_line = False
        self.bar = None

    def _write(self, s):
        if self.stream is None:
            return
        try:
            self.stream.write(s)
            self.stream.flush()
        except (OSError, ValueError):   # stderr closed (`2>&1 | head`): training matters more
            self.stream = None
