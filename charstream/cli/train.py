"""`charstream train`: learn from paths or stdin as the text arrives, saving as it goes."""
import threading
import time

import click

from ..errors import CharstreamError, SourceFailed
from ..checkpoint import Checkpoint, OptionError, SaveFailed, open_model, writer_lock
from ..progress import Progress
from ..schedule import Anneal
from ..sources import Listener, chain_sources, check_source, limit_chars, with_idle
from ..trainer import Trainer
from ..cells import CELLS, DEFAULTS
from ..vocab import DEFAULT_MAX_VOCAB
from .budget import BudgetReached, Deadline, repeat_sources
from .common import FiniteFloat, fail, model_option, resolve_model_path, say, show_warnings
from .interrupts import Interrupts, Terminated, exit_code


@click.command()
@click.argument("sources", nargs=-1, metavar="[SOURCE ...]")
@model_option
@click.option("--cell", type=click.Choice(CELLS), default=None,
              help="The cell of a new model: rnn (min-char-rnn's, the default), gru or lstm.")
@click.option("--layers", type=click.IntRange(min=1, max=64), default=None,
              help="Layers of cells stacked in a new model (default 1).")
@click.option("--hidden-size", type=click.IntRange(min=1, max=100_000), default=None,
              help="Hidden units H of a new model (default " + ", ".join(
                  f"{d.hidden_size} for {c}" for c, d in DEFAULTS.items()) + ").")
@click.option("--seq-length", type=click.IntRange(min=1, max=1_000_000), default=None,
              help="Characters per truncated-backprop chunk (default 25, or the model's).")
@click.option("--learning-rate", type=FiniteFloat(min=0, min_open=True), default=None,
              help="The optimizer's learning rate (default: the model's; for a new one 0.1 with the rnn's "
                   "Adagrad, " + ", ".join(f"{DEFAULTS[c].learning_rate:g} for {c}" for c in CELLS[1:])
                   + " with Adam).")
@click.option("--anneal", type=FiniteFloat(min=0, max=1), default=None, metavar="FRACTION",
              help="Over the last FRACTION of a --max-seconds or --max-chars budget, lower the learning "
                   "rate linearly to 1/20 of it (default " + ", ".join(f"{DEFAULTS[c].anneal:g} for {c}" for c in CELLS)
                   + "; 0: never). Not saved: each run anneals over its own budget.")
@click.option("--random-seed", type=click.IntRange(min=0), default=None, help="Seed of a new model's weights.")
@click.option("--reset-every", type=click.IntRange(min=0), default=None, metavar="N",
              help="Zero the hidden state every N characters trained (default 0: never, or the model's); "
                   "makes --fresh-state starts safe at a small cost (docs/quality.md).")
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
@click.option("--checkpoint-every", type=FiniteFloat(min=0), default=60.0, show_default=True,
              metavar="SECONDS", help="Save the model this often while training (0: only at the end).")
@click.option("--report-every", type=FiniteFloat(min=0), default=2.0, show_default=True,
              metavar="SECONDS", help="Print progress to stderr this often.")
@click.option("--sample-every", type=FiniteFloat(min=0), default=30.0, show_default=True,
              metavar="SECONDS", help="Print a sample of the live model this often (0: never).")
@click.option("--passes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Read the file sources this many times (streams cannot be repeated).")
@click.option("--max-seconds", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Stop after this many seconds, and save.")
@click.option("--max-chars", type=click.IntRange(min=1), default=None,
              help="Stop after reading this many characters, and save.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False), default=None,
              help="Append one line per progress report to this file (CSV if it ends in .csv, else JSON lines).")
def train(sources, model_path, cell, layers, hidden_size, seq_length, learning_rate, anneal, random_seed, reset_every,
          listen,
          max_vocab,
          initial_vocab, fixed_vocab, checkpoint_every, report_every, sample_every, passes, max_seconds,
          max_chars, log_path):
    """Train a model on SOURCEs as the text arrives, in order, as one stream: paths, - for stdin
    (the default), tcp://HOST:PORT (until the peer closes), file://PATH, or SCHEME://... for a
    plugin's scheme (see `charstream plugins`).

    A new model is created unless the model file exists, in which case training resumes it exactly
    where it stopped. The model is saved at the end of the stream, every --checkpoint-every seconds
    and on Ctrl-C or SIGTERM. One process at a time trains a model; `generate` can read it meanwhile.
    Progress goes to stderr.

    \b
    Examples:
      charstream corpus | charstream train -
      charstream train notes.txt more-notes.txt --model notes.npz
      charstream train corpus.txt --passes 3 --hidden-size 256 --log loss.csv
      charstream train corpus.txt --cell lstm --layers 2 --model lstm.npz
      tail -f app.log | charstream train - --model log.npz --checkpoint-every 30
      charstream train tcp://127.0.0.1:5000 --model feed.npz
      charstream train --listen 127.0.0.1:5000 --model feed.npz
    """
    show_warnings()
    sources = sources or (() if listen else ("-",))
    if listen and passes > 1:
        raise click.BadParameter("--listen is a stream, which cannot be read twice", param_hint="--passes")
    try:
        for source in sources:
            check_source(source)
        listener = Listener(listen, on_event=say) if listen else None
    except CharstreamError as e:
        raise fail(e)
    sources = repeat_sources(sources, passes)
    if listener is not None:
        say(f"listening on {listener.address}")
    path = resolve_model_path(model_path)
    interrupts = Interrupts()
    with interrupts.installed():
        try:
            with _writer_lock(path):
                model = _open_model(path, hidden_size, random_seed, max_vocab, initial_vocab, fixed_vocab,
                                    cell, layers)
                try:
                    trainer = Trainer(model, seq_length, learning_rate, reset_every)
                except ValueError as e:
                    raise fail(e)
                fraction = DEFAULTS[model.cell].anneal if anneal is None else anneal
                schedule = Anneal(fraction, seconds=max_seconds, chars=max_chars)
                _train(model, path, trainer, sources, listener, interrupts, checkpoint_every, report_every,
                       sample_every, max_seconds, max_chars, log_path, schedule)
        except SaveFailed as e:   # the last save; the file keeps what it held
            raise fail(e)
        except (KeyboardInterrupt, Terminated) as e:   # before any training: nothing to save
            say("interrupted before any text arrived: nothing saved")
            raise SystemExit(exit_code(e))


def _writer_lock(path):
    """Take the model's writer lock, or exit saying why not."""
    try:
        return writer_lock(path)
    except CharstreamError as e:
        raise fail(e)


def _open_model(path, hidden_size, random_seed, max_vocab, initial_vocab, fixed_vocab, cell, layers):
    try:
        return open_model(path, hidden_size=hidden_size, random_seed=random_seed, max_vocab=max_vocab,
                          vocab=initial_vocab, fixed_vocab=fixed_vocab, cell=cell, layers=layers)
    except OptionError as e:
        raise click.BadParameter(str(e), param_hint="--" + e.option.replace("_", "-")) from None
    except CharstreamError as e:
        raise fail(e)


def _train(model, path, trainer, sources, listener, interrupts, checkpoint_every, report_every, sample_every,
           max_seconds, max_chars, log_path, schedule):
    """Train until the stream ends, a budget runs out or a signal comes; signals wait while the
    model is mid-update. `schedule` anneals the learning rate over the budget."""
    seen0, chunks0, trained0 = model.state.chars_seen, model.state.chunks, model.state.chars_trained
    log = _open_log(log_path)   # closed below; a failing run exits the process
    progress = Progress(model, every=report_every, sample_every=sample_every, log=log,
                        log_format="csv" if log_path and log_path.lower().endswith(".csv") else "jsonl")
    checkpoint = Checkpoint(model, path, checkpoint_every, guard=interrupts.deferred)
    deadline = Deadline(max_seconds)
    start = time.monotonic()

    def on_idle():   # no text for a while: the time budget and checkpoints still run
        deadline.check()
        checkpoint.maybe()

    waits = [x for x in (checkpoint_every, max_seconds) if x and x < threading.TIMEOUT_MAX]
    idle = min(waits + [1.0]) if waits else None
    record = None
    stopped = None
    try:
        stream = chain_sources(list(sources) + ([listener] if listener else []))
        stream = with_idle(limit_chars(stream, max_chars), idle, on_idle)
        records = interrupts.deferring(trainer.train(interrupts.allowing_in(stream)))
        try:
            for record in records:
                now = time.monotonic()
                schedule.update(trainer, now - start, record.chars - trained0)
                progress.update(record, now)
                checkpoint.maybe(now)
                deadline.check(now)
        finally:
            records.close()   # the trainer keeps what it read but did not train, now
        interrupts.stop()   # the stream has ended: from here on signals are only noted
    except BudgetReached:
        interrupts.stop()
        stopped = f"stopped after --max-seconds {max_seconds:g}"
    except (KeyboardInterrupt, Terminated) as e:
        interrupts.stop()   # a second signal must not cut the save short
        progress.close_line()
        if model.state.chars_seen > seen0:
            checkpoint.save()
            say(f"interrupted: saved model to {path}")
        else:
            say("interrupted before any text arrived: nothing saved")
        raise SystemExit(exit_code(e))
    except (SourceFailed, OSError) as e:   # the text before the failure was good: keep its training
        progress.close_line()
        message = fail(e).message if isinstance(e, SourceFailed) else f"reading input failed: {e.strerror or e}"
        if model.state.chars_seen > seen0:
            checkpoint.save()
            raise click.ClickException(f"{message}; what was trained before it is saved to {path}") from None
        raise click.ClickException(f"{message}; {checkpoint.kept()}") from None
    except CharstreamError as e:   # NonFiniteError, input refused as binary: the file keeps its last save
        progress.close_line()
        raise click.ClickException(f"{fail(e).message}; {checkpoint.kept()}") from None
    except MemoryError:
        progress.close_line()
        raise click.ClickException(f"out of memory (seq length {trainer.seq_length}, hidden size "
                                   f"{model.hidden_size}); {checkpoint.kept()}") from None
    if log is not None:
        log.close()
    if model.state.chars_seen == seen0:
        where = ", ".join(sources) or f"--listen {listener.address}"
        if stopped:   # a budget ran out before any text came: not an error
            say(f"{stopped}: no text arrived from {where}, the model was not changed")
            return
        raise click.ClickException(f"no text to train on: {where} gave no characters; "
                                   f"the model was not changed")
    if record is not None:
        progress.report(record)
    progress.close_line()
    checkpoint.save()
    if stopped:
        say(stopped)
    st = model.state
    say(f"saved model to {path} ({_shape(model)}V={model.vocab_size}, H={model.hidden_size}, "
        f"{st.chunks - chunks0:,} chunks trained now, {st.chunks:,} in all)")


def _shape(model):
    """"lstm x 2, " for models other than min-char-rnn's one rnn layer."""
    return "" if (model.cell, model.layers) == ("rnn", 1) else f"{model.cell} x {model.layers}, "


def _open_log(path):
    if path is None:
        return None
    try:
        return open(path, "a", encoding="utf-8", newline="")
    except OSError as e:
        raise click.ClickException(f"{path}: cannot open the log: {e.strerror}") from None
