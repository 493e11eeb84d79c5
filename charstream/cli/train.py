"""`charstream train`: learn from paths or stdin as the text arrives, saving as it goes."""
import os
import time

import click

from ..errors import CharstreamError
from ..model import Model
from ..progress import Progress
from ..sources import Listener, chain_sources, check_source, with_idle
from ..vocab import DEFAULT_MAX_VOCAB
from ..store import save
from ..trainer import Trainer
from .budget import BudgetReached, Deadline, limit_chars, repeat_sources
from .common import (Terminated, fail, load_model, model_option, sigterm_raises, resolve_model_path,
                     show_warnings)


@click.command()
@click.argument("sources", nargs=-1, metavar="[SOURCE ...]")
@model_option
@click.option("--hidden-size", type=click.IntRange(min=1), default=None,
              help="Hidden units H of a new model (default 100).")
@click.option("--seq-length", type=click.IntRange(min=1), default=None,
              help="Characters per truncated-backprop chunk (default 25, or the model's).")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Adagrad learning rate (default 0.1, or the model's).")
@click.option("--random-seed", type=int, default=None, help="Seed of a new model's weights.")
@click.option("--listen", metavar="HOST:PORT", default=None,
              help="After the SOURCEs (if any), accept TCP connections on HOST:PORT one after another and "
                   "train on each, until interrupted (port 0: any free port, printed on stderr).")
@click.option("--max-vocab", type=click.IntRange(min=1), default=None, metavar="N",
              help=f"Most characters the vocabulary may hold (default {DEFAULT_MAX_VOCAB} for a new model, "
                   f"else the model's); later new characters are read as U+FFFD.")
@click.option("--vocab", "initial_vocab", default=None, metavar="CHARS",
              help="The characters a new model starts with, in this order.")
@click.option("--fixed-vocab/--open-vocab", default=None,
              help="Never grow the vocabulary (characters outside it become U+FFFD if it has U+FFFD, else "
                   "they are skipped), or let it grow again. Saved in the model.")
@click.option("--checkpoint-every", type=click.FloatRange(min=0), default=60.0, show_default=True,
              metavar="SECONDS", help="Save the model this often while training (0: only at the end).")
@click.option("--report-every", type=click.FloatRange(min=0), default=2.0, show_default=True,
              metavar="SECONDS", help="Print progress to stderr this often.")
@click.option("--sample-every", type=click.FloatRange(min=0), default=30.0, show_default=True,
              metavar="SECONDS", help="Print a sample of the live model this often (0: never).")
@click.option("--passes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Read the file sources this many times (streams cannot be repeated).")
@click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many seconds, and save.")
@click.option("--max-chars", type=click.IntRange(min=1), default=None,
              help="Stop after reading this many characters, and save.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False), default=None,
              help="Append one line per progress report to this file (CSV if it ends in .csv, else JSON lines).")
def train(sources, model_path, hidden_size, seq_length, learning_rate, random_seed, listen, max_vocab,
          initial_vocab, fixed_vocab, checkpoint_every, report_every, sample_every, passes, max_seconds,
          max_chars, log_path):
    """Train a model on SOURCEs as the text arrives, in order, as one stream: paths, - for stdin
    (the default), tcp://HOST:PORT (until the peer closes), file://PATH, or SCHEME://... for a
    plugin's scheme (see `charstream plugins`).

    A new model is created unless the model file exists, in which case training resumes it exactly
    where it stopped. The model is saved at the end of the stream, every --checkpoint-every seconds
    and on Ctrl-C. Progress goes to stderr.

    \b
    Examples:
      charstream corpus | charstream train -
      charstream train notes.txt more-notes.txt --model notes.npz
      charstream train corpus.txt --passes 3 --hidden-size 256 --log loss.csv
      tail -f app.log | charstream train - --model log.npz --checkpoint-every 30
      charstream train tcp://127.0.0.1:5000 --model feed.npz
      charstream train --listen 127.0.0.1:5000 --model feed.npz
    """
    show_warnings()
    sources = sources or (() if listen else ("-",))
    try:
        for source in sources:
            check_source(source)
        listener = Listener(listen, on_event=lambda m: click.echo(m, err=True)) if listen else None
    except CharstreamError as e:
        raise fail(e)
    if listener is not None and passes > 1:
        raise click.BadParameter("--listen is a stream, which cannot be read twice", param_hint="--passes")
    sources = repeat_sources(sources, passes)
    if listener is not None:
        click.echo(f"listening on {listener.address}", err=True)
    path = resolve_model_path(model_path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path):
        model = load_model(path)
        if hidden_size is not None and hidden_size != model.hidden_size:
            raise click.BadParameter(
                f"{path} has hidden size {model.hidden_size}; a new size needs a new --model path",
                param_hint="--hidden-size")
        if random_seed is not None:
            click.echo(f"Warning: --random-seed only seeds new models; {path} already exists", err=True)
        if initial_vocab is not None:
            click.echo(f"Warning: --vocab only sets up new models; {path} already exists", err=True)
        try:
            if max_vocab is not None:
                model.max_vocab = max_vocab
        except ValueError as e:
            raise click.BadParameter(f"{path}: {e}", param_hint="--max-vocab") from None
        if fixed_vocab is not None:
            model.fixed_vocab = fixed_vocab
    else:
        if not os.path.isdir(folder):
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as e:
                raise click.ClickException(f"cannot create {folder}: {e.strerror}") from None
        if fixed_vocab and not initial_vocab:
            raise click.BadParameter("a new model with a fixed vocabulary needs its characters: give --vocab CHARS",
                                     param_hint="--fixed-vocab")
        try:
            model = Model(dict.fromkeys(initial_vocab or ""), hidden_size or 100, seed=random_seed,
                          max_vocab=max_vocab or DEFAULT_MAX_VOCAB, fixed_vocab=bool(fixed_vocab))
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--vocab") from None
    if not os.access(folder, os.W_OK):
        raise click.ClickException(f"{folder}: permission denied: the model could not be saved there")
    trainer = Trainer(model, seq_length, learning_rate)

    seen0, chunks0 = model.state.chars_seen, model.state.chunks
    log = _open_log(log_path)
    progress = Progress(model, every=report_every, sample_every=sample_every, log=log,
                        log_format="csv" if log_path and log_path.endswith(".csv") else "jsonl")
    checkpoint = Checkpoint(model, path, checkpoint_every)
    deadline = Deadline(max_seconds)

    def on_idle():
        deadline.check()
        checkpoint.maybe()

    idle_every = min(x for x in (checkpoint_every or None, max_seconds, 1.0) if x)
    record = None
    stopped = None
    try:
        with sigterm_raises():
            stream = chain_sources(list(sources) + ([listener] if listener else []))
            stream = with_idle(limit_chars(stream, max_chars), idle_every, on_idle)
            for record in trainer.train(stream):
                now = time.monotonic()
                progress.update(record, now)
                checkpoint.maybe(now)
                deadline.check(now)
    except BudgetReached:
        stopped = f"stopped after --max-seconds {max_seconds:g}"
    except (KeyboardInterrupt, Terminated) as e:
        progress.close_line()
        code = 143 if isinstance(e, Terminated) else 130
        if model.state.chars_seen > seen0:
            checkpoint.save()
            click.echo(f"interrupted: saved model to {path}", err=True)
        else:
            click.echo("interrupted before any text arrived: nothing saved", err=True)
        raise SystemExit(code)
    except CharstreamError as e:
        progress.close_line()
        raise fail(e)
    except OSError as e:
        progress.close_line()
        raise click.ClickException(f"reading input failed: {e.strerror or e}") from None
    if model.state.chars_seen == seen0:
        raise click.ClickException(f"no text to train on: {', '.join(sources)} gave no characters; "
                                   f"the model was not changed")
    if record is not None:
        progress.report(record)
    progress.close_line()
    checkpoint.save()
    if stopped:
        click.echo(stopped, err=True)
    st = model.state
    click.echo(f"saved model to {path} (V={model.vocab_size}, H={model.hidden_size}, "
               f"{st.chunks - chunks0:,} chunks trained now, {st.chunks:,} in all)", err=True)


class Checkpoint:
    """Saves the model every `every` seconds (0: never) when there is something new to save."""

    def __init__(self, model, path, every):
        self.model, self.path, self.every = model, path, every
        self.last = time.monotonic()
        self.saved_seen = model.state.chars_seen

    def maybe(self, now=None):
        now = time.monotonic() if now is None else now
        if self.every and now - self.last >= self.every and self.model.state.chars_seen > self.saved_seen:
            self.save()

    def save(self):
        _save(self.model, self.path)
        self.last = time.monotonic()
        self.saved_seen = self.model.state.chars_seen


def _open_log(path):
    if path is None:
        return None
    try:
        return open(path, "a", encoding="utf-8", newline="")
    except OSError as e:
        raise click.ClickException(f"{path}: cannot open the log: {e.strerror}") from None


def _save(model, path):
    try:
        save(model, path)
    except CharstreamError as e:
        raise fail(e)
    except OSError as e:
        raise click.ClickException(f"saving {path} failed, the previous model is intact: "
                                   f"{e.strerror or e}") from None
