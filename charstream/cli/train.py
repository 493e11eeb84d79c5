"""`charstream train`: learn from paths or stdin as the text arrives, saving as it goes."""
import os
import threading
import time

import click

from ..errors import CharstreamError
from ..lock import WriterLock
from ..model import Model
from ..progress import Progress
from ..sources import chain_sources, check_source, with_idle
from ..store import remove_stale_temps, save
from ..trainer import Trainer
from .common import FiniteFloat, fail, load_model, model_option, resolve_model_path, say, show_warnings
from .interrupts import Interrupts, Terminated, exit_code


@click.command()
@click.argument("sources", nargs=-1, metavar="[SOURCE ...]")
@model_option
@click.option("--hidden-size", type=click.IntRange(min=1, max=100_000), default=None,
              help="Hidden units H of a new model (default 100).")
@click.option("--seq-length", type=click.IntRange(min=1, max=1_000_000), default=None,
              help="Characters per truncated-backprop chunk (default 25, or the model's).")
@click.option("--learning-rate", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Adagrad learning rate (default 0.1, or the model's).")
@click.option("--random-seed", type=click.IntRange(min=0), default=None, help="Seed of a new model's weights.")
@click.option("--checkpoint-every", type=FiniteFloat(min=0), default=60.0, show_default=True,
              metavar="SECONDS", help="Save the model this often while training (0: only at the end).")
@click.option("--report-every", type=FiniteFloat(min=0), default=2.0, show_default=True,
              metavar="SECONDS", help="Print progress to stderr this often.")
@click.option("--sample-every", type=FiniteFloat(min=0), default=30.0, show_default=True,
              metavar="SECONDS", help="Print a sample of the live model this often (0: never).")
def train(sources, model_path, hidden_size, seq_length, learning_rate, random_seed, checkpoint_every,
          report_every, sample_every):
    """Train a model on SOURCEs (paths, or - for stdin; stdin by default) as the text arrives.

    A new model is created unless the model file exists, in which case training resumes it exactly
    where it stopped. The model is saved at the end of the stream, every --checkpoint-every seconds
    and on Ctrl-C or SIGTERM. One process at a time trains a model; `generate` can read it meanwhile.
    Progress goes to stderr.

    \b
    Examples:
      charstream corpus | charstream train -
      charstream train notes.txt more-notes.txt --model notes.npz
      tail -f app.log | charstream train - --model log.npz --checkpoint-every 30
    """
    show_warnings()
    sources = sources or ("-",)
    try:
        for source in sources:
            check_source(source)
    except CharstreamError as e:
        raise fail(e)
    path = resolve_model_path(model_path)
    interrupts = Interrupts()
    with interrupts.installed():
        try:
            with _writer_lock(path):
                model = _open_model(path, hidden_size, random_seed)
                try:
                    trainer = Trainer(model, seq_length, learning_rate)
                except ValueError as e:
                    raise fail(e)
                _train(model, path, trainer, sources, interrupts, checkpoint_every, report_every,
                       sample_every)
        except (KeyboardInterrupt, Terminated) as e:   # before any training: nothing to save
            say("interrupted before any text arrived: nothing saved")
            raise SystemExit(exit_code(e))


def _writer_lock(path):
    """Create the model's folder if needed and take its writer lock, or exit saying why not."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise click.ClickException(f"{folder}: not a directory: the model could not be saved there")
    if not os.path.isdir(folder):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise click.ClickException(f"cannot create {folder}: {e.strerror}") from None
    denied = click.ClickException(f"{folder}: permission denied: the model could not be saved there")
    if not os.access(folder, os.W_OK):
        raise denied
    lock = WriterLock(path)
    try:
        lock.acquire()
    except CharstreamError as e:
        raise fail(e)
    except PermissionError:
        raise denied from None
    except OSError as e:
        raise click.ClickException(f"{folder}: {e.strerror}: the model could not be saved there") from None
    remove_stale_temps(path)   # we are the only writer: any temporary file is from a killed save
    return lock


def _open_model(path, hidden_size, random_seed):
    if os.path.exists(path):
        model = load_model(path)
        if hidden_size is not None and hidden_size != model.hidden_size:
            raise click.BadParameter(
                f"{path} has hidden size {model.hidden_size}; a new size needs a new --model path",
                param_hint="--hidden-size")
        if random_seed is not None:
            say(f"Warning: --random-seed only seeds new models; {path} already exists")
        return model
    try:
        return Model("", hidden_size or 100, seed=random_seed)
    except MemoryError:
        raise click.ClickException(f"not enough memory for a model of hidden size {hidden_size}") from None


def _train(model, path, trainer, sources, interrupts, checkpoint_every, report_every, sample_every):
    """Train until the stream ends or a signal comes; signals wait while the model is mid-update."""
    seen0, chunks0 = model.state.chars_seen, model.state.chunks
    progress = Progress(model, every=report_every, sample_every=sample_every)
    checkpoint = Checkpoint(model, path, checkpoint_every, interrupts)
    idle = checkpoint_every if 0 < checkpoint_every < threading.TIMEOUT_MAX else None
    record = None
    try:
        stream = with_idle(chain_sources(sources), idle, checkpoint.maybe)
        for record in interrupts.deferring(trainer.train(interrupts.allowing_in(stream))):
            now = time.monotonic()
            progress.update(record, now)
            checkpoint.maybe(now)
        interrupts.stop()   # the stream has ended: from here on signals are only noted
    except (KeyboardInterrupt, Terminated) as e:
        interrupts.stop()   # a second signal must not cut the save short
        progress.close_line()
        if model.state.chars_seen > seen0:
            checkpoint.save()
            say(f"interrupted: saved model to {path}")
        else:
            say("interrupted before any text arrived: nothing saved")
        raise SystemExit(exit_code(e))
    except CharstreamError as e:   # NonFiniteError, a source that fails: the file keeps its last save
        progress.close_line()
        raise click.ClickException(f"{fail(e).message}; {checkpoint.kept()}") from None
    except MemoryError:
        progress.close_line()
        raise click.ClickException(f"out of memory (seq length {trainer.seq_length}, hidden size "
                                   f"{model.hidden_size}); {checkpoint.kept()}") from None
    except OSError as e:
        progress.close_line()
        raise click.ClickException(f"reading input failed: {e.strerror or e}; {checkpoint.kept()}") from None
    if model.state.chars_seen == seen0:
        raise click.ClickException(f"no text to train on: {', '.join(sources)} gave no characters; "
                                   f"the model was not changed")
    if record is not None:
        progress.report(record)
    progress.close_line()
    checkpoint.save()
    st = model.state
    say(f"saved model to {path} (V={model.vocab_size}, H={model.hidden_size}, "
        f"{st.chunks - chunks0:,} chunks trained now, {st.chunks:,} in all)")


class Checkpoint:
    """Saves the model every `every` seconds (0: never) when there is something new to save.

    A periodic save that fails (a full disk) is reported and retried later, training goes on; the
    final save failing is an error. Either way the file keeps the previous save intact.
    """

    def __init__(self, model, path, every, interrupts=None):
        self.model, self.path, self.every = model, path, every
        self.interrupts = interrupts or Interrupts()
        self.last = time.monotonic()
        self.existed = os.path.exists(path)
        self.saved = self._progress() if self.existed else None   # what the file holds
        self.saves = 0
        self.failing = False   # the last periodic save failed

    def _progress(self):
        st = self.model.state   # text received and chunks trained: a save is due when either moved
        return st.chars_seen, st.chunks

    def maybe(self, now=None):
        now = time.monotonic() if now is None else now
        if self.every and now - self.last >= self.every and self._progress() != self.saved:
            try:
                self.save()
            except click.ClickException as e:
                self.last = time.monotonic()
                if not self.failing:   # once per run of failures, not at every retry
                    say(f"Warning: checkpoint failed, training goes on and will retry: {e.message}")
                self.failing = True
            else:
                self.failing = False

    def save(self):
        if self._progress() == self.saved:
            return   # the file already holds this state
        with self.interrupts.deferred():   # a signal waits for the save, and for knowing it is done
            _save(self.model, self.path, self.kept())
            self.last = time.monotonic()
            self.saved = self._progress()
            self.saves += 1

    def kept(self):
        """What the model file holds now, for error messages."""
        if self.saves or self.existed:
            return f"{self.path} keeps its last good save"
        return f"nothing was saved to {self.path}"


def _save(model, path, kept):
    try:
        save(model, path)
    except CharstreamError as e:   # parameters that became NaN or infinite are never saved
        raise click.ClickException(f"{fail(e).message}; {kept}") from None
    except OSError as e:
        raise click.ClickException(f"saving {path} failed: {e.strerror or e}; {kept}") from None
