"""`charstream eval`: score text with a model without training it."""
import json

import click

from ..errors import CharstreamError
from ..scoring import LN2, score, score_adaptive
from ..sources import chain_sources, check_source
from .common import fail, load_model, model_option, resolve_model_path, show_warnings


@click.command("eval")
@click.argument("sources", nargs=-1, metavar="[SOURCE ...]")
@model_option
@click.option("--adapt", is_flag=True,
              help="Dynamic evaluation: score each chunk, then train a copy of the model on it (test-then-train); "
                   "the model file is never changed.")
@click.option("--fresh-state", is_flag=True,
              help="Start from a zero hidden state instead of the state training left.")
@click.option("--window", type=click.IntRange(min=2), default=None, metavar="N",
              help="Also score each N-character window on its own, from the same start state, and report "
                   "their median.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def eval_(sources, model_path, adapt, fresh_state, window, as_json):
    """Score SOURCEs: nats/char, bits/char, perplexity. SOURCEs are those of `charstream train`:
    paths, - for stdin (the default), tcp://HOST:PORT, file://PATH, or a plugin's SCHEME://...

    The hidden state starts where training left it and is carried through the whole text. Nothing
    is ever saved: with --adapt a copy of the model learns from the text as it is scored, each chunk
    scored before it trains, as `train` scores a stream. Characters the model has never seen are
    counted and skipped (or, when its vocabulary is full or fixed and holds U+FFFD, read as U+FFFD,
    as training reads them, and counted as such).

    \b
    Examples:
      charstream eval held-out.txt
      charstream eval held-out.txt --adapt
      tail -n 1000 app.log | charstream eval - --model log.npz --json
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
        if adapt and window is not None:
            raise click.BadParameter("windows are scored without adapting: drop --window or --adapt",
                                     param_hint="--window")
        result = (score_adaptive(model, chain_sources(sources), fresh_state=fresh_state) if adapt else
                  score(model, chain_sources(sources), window, fresh_state=fresh_state))
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
        "mode": result.mode,
        "start_state": "fresh" if fresh_state else "trained",
        "chars_scored": result.predicted,
        "unknown_chars": result.unknown,
        "chars_read_as_unk": result.as_unk,
        "nats_per_char": result.nats_per_char,
        "bits_per_char": result.bits_per_char,
        "perplexity": result.perplexity,
    }
    if window is not None:
        figures.update(window=window, windows=len(result.windows),
                       median_window_nats_per_char=result.median_window,
                       median_window_bits_per_char=result.median_window / LN2)
    if as_json:
        click.echo(json.dumps(figures))
        return
    click.echo(f"{_n(result.predicted, 'character')} scored, {result.unknown:,} outside the vocabulary (skipped)"
               + (f"; {_n(result.as_unk, 'character')} outside it read as U+FFFD" if result.as_unk else ""))
    label = "adapting" if adapt else "whole text"
    click.echo(f"{label}:  {result.nats_per_char:.4f} nats/char  {result.bits_per_char:.4f} bits/char  "
               f"perplexity {result.perplexity:.3f}")
    if window is None:
        return
    label = f"median of {_n(len(result.windows), 'window')} of {window:,}" if result.windows else \
        f"median window (text shorter than {window:,}: whole text)"
    click.echo(f"{label}:  {result.median_window:.4f} nats/char  "
               f"{result.median_window / LN2:.4f} bits/char")


def _n(n, noun):
    return f"{n:,} {noun}" + ("" if n == 1 else "s")
