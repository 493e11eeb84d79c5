"""`charstream train`: parse the options, call `charstream.train` (charstream/training.py), print what it reports."""
import click

from ..errors import CharstreamError
from ..checkpoint import OptionError
from ..sources import Listener, check_source
from ..training import NoText, Training
from ..cells import CELLS, DEFAULTS
from ..store import MAX_LANES
from ..vocab import DEFAULT_MAX_VOCAB
from .common import FiniteFloat, fail, model_option, resolve_model_path, say, show_warnings
from .interrupts import Interrupts, Terminated, exit_code
from .show import Printer


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
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default=None,
              help="The number type of a new model (default " + ", ".join(f"{d.dtype} for {c}" for c, d in DEFAULTS.items())
                   + "): float32 halves the bytes and doubles the vector width; the rnn at float64 is "
                   "min-char-rnn's math exactly.")
@click.option("--lanes", type=click.IntRange(min=1, max=MAX_LANES), default=None, metavar="B",
              help="Train B stretches of the text side by side, one update from their mean gradient "
                   "(default: the model's; for a new one on files " + ", ".join(f"{d.lanes} for {c}" for c, d in DEFAULTS.items())
                   + ", fewer for a short text, 1 on streams; a model keeps its lanes). Files are split into B regions, "
                   "streams dealt in blocks of 4096 characters (docs/kernel.md).")
@click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
              help="Threads the kernel runs on (default: the cores this process may use; more is clamped "
                   "with a warning). Never changes the result.")
@click.option("--seq-length", type=click.IntRange(min=1, max=1_000_000), default=None,
              help="Characters per truncated-backprop chunk (default: the model's; for a new one " + ", ".join(
                  f"{d.seq_length} for {c}" for c, d in DEFAULTS.items()) + ").")
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
@click.option("--vocab", default=None, metavar="CHARS",
              help="The characters a new model starts with, in this order.")
@click.option("--fixed-vocab/--open-vocab", default=None,
              help="Never grow the vocabulary (characters outside it become U+FFFD if it has U+FFFD, else "
                   "they are skipped), or let it grow again. Saved in the model.")
@click.option("--checkpoint-every", type=FiniteFloat(min=0), default=60.0, show_default=True,
              metavar="SECONDS", help="Save the model this often while training (0: only at the end).")
@click.option("--report-every", type=FiniteFloat(min=0), default=2.0, show_default=True,
              metavar="SECONDS", help="Print progress to stderr this often, and when the input goes quiet after "
                   "training (with how far and the time left when the run's length is known).")
@click.option("--sample-every", type=FiniteFloat(min=0), default=30.0, show_default=True,
              metavar="SECONDS", help="Print a sample of the live model this often (0: never).")
@click.option("--passes", type=click.IntRange(min=1), default=None,
              help="Read the file sources this many times (streams cannot be repeated). Default 1; with "
                   "--max-seconds or --max-chars and only file sources, as many as the budget allows.")
@click.option("--validate", default=None, metavar="SOURCE",
              help="Score this source (any SOURCE train takes) as the validation text as training goes, and "
                   "keep the parameters that score best: generate, eval, info and serve use them.")
@click.option("--val-fraction", type=FiniteFloat(min=0, max=0.5, min_open=True), default=None, metavar="F",
              help="Hold out F of the characters of each file source, in blocks of about 2,000 spread evenly "
                   "through it, as the validation text (never trained on). Default 0.05, at most 20,000 "
                   "characters in all, when file sources are read more than once.")
@click.option("--no-validation", is_flag=True, default=False,
              help="Score no validation text, not even the held-out default.")
@click.option("--validate-every", type=click.IntRange(min=1), default=None, metavar="CHARS",
              help="Characters trained between validations (default: 20 times the validation text, "
                   "at least 10,000; docs/quality.md has its cost).")
@click.option("--patience", type=click.IntRange(min=0), default=None, metavar="N",
              help="Stop after N validations in a row without a new best (default 0: never; the best "
                   "model is kept either way).")
@click.option("--dropout", type=FiniteFloat(min=0, max=1, max_open=True), default=None, metavar="RATE",
              help="Drop this fraction of the non-recurrent connections (between layers, before the "
                   "output) while training; never when scoring or generating. Default 0.5 when passes repeat "
                   "over fewer characters than the model has parameters, else 0.")
@click.option("--max-seconds", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Stop after this many seconds, and save.")
@click.option("--max-chars", type=click.IntRange(min=1), default=None,
              help="Stop after reading this many characters, and save.")
@click.option("--log", type=click.Path(dir_okay=False), default=None,
              help="Append one line per progress report to this file (CSV if it ends in .csv, else JSON lines).")
def train(sources, model_path, listen, sample_every, no_validation, **options):
    """Train a model on SOURCEs as the text arrives, in order, as one stream: paths, - for stdin
    (the default), tcp://HOST:PORT (until the peer closes), file://PATH, or SCHEME://... for a
    plugin's scheme (see `charstream plugins`).

    A new model is created unless the model file exists, in which case training resumes it exactly
    where it stopped. The model is saved at the end of the stream, every --checkpoint-every seconds
    and on Ctrl-C or SIGTERM. One process at a time trains a model; `generate` can read it meanwhile.
    Progress goes to stderr: a progress bar on a terminal when the run's length is known, else
    one line per report.

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
    sources = list(sources or (() if listen else ("-",)))
    if no_validation:
        if options["validate"] is not None or options["val_fraction"] is not None:
            raise click.BadParameter("--no-validation scores no validation text: drop --validate and "
                                     "--val-fraction, or it", param_hint="--no-validation")
        options["validate"] = False
    if listen and (options["passes"] or 1) > 1:
        raise click.BadParameter("--listen is a stream, which cannot be read twice", param_hint="--passes")
    try:
        for source in sources:
            check_source(source)
        listener = Listener(listen, on_event=say) if listen else None
    except CharstreamError as e:
        raise fail(e)
    if listener is not None:
        say(f"listening on {listener.address}")
    where = ", ".join(sources) or f"--listen {listener.address}"
    path = resolve_model_path(model_path)
    printer = Printer(sample_every=sample_every)
    interrupts = Interrupts()
    # every other option is charstream.train's, by the same name (charstream.training.Options)
    run = None
    with interrupts.installed():
        try:
            run = Training(sources + ([listener] if listener else []), path, printer, interrupts, **options)
            summary = run.run()
        except OptionError as e:
            printer.close_line()
            raise click.BadParameter(str(e), param_hint="--" + e.option.replace("_", "-")) from None
        except NoText:
            printer.close_line()
            raise click.ClickException(f"no text to train on: {where} gave no characters; "
                                       f"the model was not changed") from None
        except (CharstreamError, ValueError) as e:   # SaveFailed, SourceFailed, NonFiniteError...: one line
            printer.close_line()
            raise fail(e)
        except (KeyboardInterrupt, Terminated) as e:
            printer.close_line()
            say(f"interrupted: saved model to {path}" if run is not None and run.saved else
                "interrupted before any text arrived: nothing saved")
            raise SystemExit(exit_code(e))
    printer.close_line()
    stopped = f"stopped after --max-seconds {options['max_seconds']:g}" if summary.stopped == "max_seconds" else None
    if summary.chars_seen == 0:   # a budget ran out before any text came: not an error
        say(f"{stopped}: no text arrived from {where}, the model was not changed")
        return
    if summary.stopped == "patience":
        stopped = f"stopped early: {summary.validation['since_best']} validations without a new best (--patience)"
    if stopped:
        say(stopped)
    v = summary.validation
    if v is not None:
        unknown = f"; {v['unknown']:,} characters outside the vocabulary skipped" if v.get("unknown") else ""
        say(f"validation {v['loss']:.4f} nats/char ({v['count']:,} in all{unknown}); best model kept: "
            f"{v['best_loss']:.4f} nats/char at {v['best_chars']:,} characters trained, "
            f"{v['since_best']:,} validation{'' if v['since_best'] == 1 else 's'} ago")
        if "final_loss" in v:
            say(f"the model at the end scores {v['final_loss']:.4f} on the validation text, below the best "
                f"validated: readers use it (a resumed run goes on from the best validated, as one run would)")
    model = summary.model
    say(f"saved model to {path} ({_shape(model)}V={model.vocab_size}, H={model.hidden_size}, "
        f"{summary.chunks:,} chunks trained now, {model.state.chunks:,} in all)")


def _shape(model):
    """"lstm x 2, " for models other than min-char-rnn's one rnn layer."""
    return "" if (model.cell, model.layers) == ("rnn", 1) else f"{model.cell} x {model.layers}, "
