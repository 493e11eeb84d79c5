"""`charstream eval`: score text with a model without training it."""
import json

import click

from ..errors import CharstreamError
from ..scoring import LN2, score
from ..sources import chain_sources, check_source
from .common import fail, load_model, model_option, resolve_model_path, show_warnings


@click.command("eval")
@click.argument("sources", nargs=-1, metavar="[SOURCE ...]")
@model_option
@click.option("--window", type=click.IntRange(min=2), default=2000, show_default=True,
              help="Characters per fresh-state window for the median score.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def eval_(sources, model_path, window, as_json):
    """Score SOURCEs without training: nats/char, bits/char, perplexity. SOURCEs are those of
    `charstream train`: paths, - for stdin (the default), tcp://HOST:PORT, file://PATH, or a plugin's
    SCHEME://...

    The hidden state is carried through the whole text. Because a vanilla RNN's state can saturate
    on text unlike its training data, the median over fresh-state windows is reported too.
    Characters the model has never seen are counted and skipped (or, when its vocabulary is full or
    fixed and holds U+FFFD, read as U+FFFD, as training reads them, and counted as such).

    \b
    Examples:
      charstream eval held-out.txt
      tail -n 1000 app.log | charstream eval - --model log.npz --json
      charstream eval tcp://127.0.0.1:5000 --window 500
    """
    show_warnings()
    sources = sources or ("-",)
    try:
        for source in sources:
            check_source(source)
    except CharstreamError as e:
        raise fail(e)
    model = load_model(resolve_model_path(model_path))
    if model.vocab_size == 0:
        raise click.ClickException("the model has an empty vocabulary: train it first")
    try:
        result = score(model, chain_sources(sources), window)
    except KeyboardInterrupt:   # like train and generate: 130, no "Aborted!"
        raise SystemExit(130) from None
    except CharstreamError as e:
        raise fail(e)
    except OSError as e:
        raise click.ClickException(f"reading input failed: {e.strerror or e}") from None
    if result.predicted == 0:
        raise click.ClickException(
            "no text to score: " + ("the input was empty" if not result.known and not result.unknown else
                                    f"all {result.unknown:,} characters are outside the model's vocabulary"
                                    if not result.known else
                                    "only one character the model knows, and nothing after it to predict"
                                    + (f" ({result.unknown:,} outside the vocabulary)" if result.unknown else "")))
    figures = {
        "chars_scored": result.predicted,
        "unknown_chars": result.unknown,
        "chars_read_as_unk": result.as_unk,
        "nats_per_char": result.nats_per_char,
        "bits_per_char": result.bits_per_char,
        "perplexity": result.perplexity,
        "window": window,
        "windows": len(result.windows),
        "median_window_nats_per_char": result.median_window,
        "median_window_bits_per_char": result.median_window / LN2,
    }
    if as_json:
        click.echo(json.dumps(figures))
        return
    click.echo(f"{_n(result.predicted, 'character')} scored, {result.unknown:,} outside the vocabulary (skipped)"
               + (f"; {_n(result.as_unk, 'character')} outside it read as U+FFFD" if result.as_unk else ""))
    click.echo(f"whole text:  {result.nats_per_char:.4f} nats/char  {result.bits_per_char:.4f} bits/char  "
               f"perplexity {result.perplexity:.3f}")
    label = f"median of {_n(len(result.windows), 'window')} of {window:,}" if result.windows else \
        f"median window (text shorter than {window:,}: whole text)"
    click.echo(f"{label}:  {result.median_window:.4f} nats/char  "
               f"{result.median_window / LN2:.4f} bits/char")


def _n(n, noun):
    return f"{n:,} {noun}" + ("" if n == 1 else "s")
