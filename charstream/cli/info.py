"""`charstream info`: what a model file holds, for people and (with --json) for scripts."""
import json
import math
import os
import unicodedata

import click

from ..facts import facts
from .._kernel import ISA
from ..scoring import LN2
from .common import load_model, model_option, resolve_model_path, show_warnings


SPARKS = "▁▂▃▄▅▆▇█"
FIRST_WEIGHT = 0.999   # the smoothed loss starts at the first chunk's loss, then s = 0.999 s + 0.001 loss


def _shown(c):
    """A vocabulary character as the preview shows it: escaped when it is invisible or would merge
    with its neighbour on screen (controls, format characters, combining marks, emoji modifiers)."""
    if c.isprintable() and not unicodedata.category(c).startswith("M") and not 0x1F3FB <= ord(c) <= 0x1F3FF:
        return c
    return c.encode("unicode_escape").decode("ascii")


def describe(model, path):
    """The figures `charstream info` prints, as a dict: the model's facts (charstream.facts) and its file's."""
    return {"path": os.path.abspath(path), "file_bytes": os.path.getsize(path),
            "vocab_preview": "".join(model.vocab[:80]), **facts(model),
            "kernel_isa": ISA}   # the compiled path this process runs (docs/build.md)


def sparkline(values):
    """One block character per value, low to high: the curve in a line of text."""
    lo, hi = min(values), max(values)
    return "".join(SPARKS[0 if hi == lo else round((v - lo) / (hi - lo) * (len(SPARKS) - 1))] for v in values)


def _curve(history, width=60):
    """The training curve's lines: a sparkline of bits/char (at most `width` points, evenly picked) and its ends."""
    if not history:
        return ["curve          none yet (charstream train keeps one)"]
    picked = [history[round(i * (len(history) - 1) / (width - 1))] for i in range(width)] \
        if len(history) > width else history
    bits = [p[1] / LN2 for p in picked]
    first, last = history[0], history[-1]
    return [f"curve          {sparkline(bits)}",
            f"               {first[1] / LN2:.3f} bits/char at {first[0]:,} characters, {last[1] / LN2:.3f} at "
            f"{last[0]:,} ({len(history)} points, {max(bits):.3f} highest, {min(bits):.3f} lowest shown)"]


@click.command()
@model_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(model_path, as_json):
    """Describe a model: sizes, vocabulary, training so far, recent loss, training curve, file.

    The recent loss is min-char-rnn's smoothed loss (an average over roughly the last 1,000 chunks,
    which starts at the first chunk's loss: on a young model it still leans on that one, as shown).

    \b
    Examples:
      charstream info
      charstream info --model log.npz --json | jq .vocab_size
    """
    show_warnings()
    path = resolve_model_path(model_path)
    d = describe(load_model(path), path)
    if as_json:
        click.echo(json.dumps(d, ensure_ascii=False))
        return
    preview = "".join(map(_shown, d["vocab_preview"]))
    recent = ("n/a (nothing trained yet)" if d["recent_nats_per_char"] is None else
              f"{d['recent_nats_per_char']:.4f} nats/char ({d['recent_bits_per_char']:.4f} bits/char)")
    first = FIRST_WEIGHT ** d["chunks_trained"]
    if d["recent_nats_per_char"] is not None and first >= 0.05:
        recent += (f", min-char-rnn's smoothed loss: after {d['chunks_trained']:,} chunks "
                   f"{first:.0%} of it is still the first chunk's loss")
    click.echo(f"model          {d['path']}  ({d['file_bytes']:,} bytes, format {d['format_version']})")
    click.echo(f"cell           {d['cell']}, {d['layers']} layer{'' if d['layers'] == 1 else 's'}, {d['dtype']}")
    click.echo(f"hidden size    {d['hidden_size']}")
    click.echo(f"vocabulary     {d['vocab_size']} character{'' if d['vocab_size'] == 1 else 's'}: {preview}"
               + ("..." if d["vocab_size"] > 80 else ""))
    click.echo(f"parameters     {d['parameters']:,}")
    click.echo(f"training       seq_length {d['seq_length']}, {d['optimizer']}, learning rate {d['learning_rate']:g}")
    click.echo(f"trained        {d['chunks_trained']:,} chunks, {d['chars_seen']:,} characters seen "
               f"({d['untrained_tail']} in the untrained tail)")
    click.echo(f"recent loss    {recent}")
    v = d["validation"]
    if v is not None:
        if "final_loss" in v:
            click.echo(f"validation     {v['loss']:.4f} nats/char last ({v['count']:,} validations); this is the "
                       f"model at the end: {v['final_loss']:.4f} nats/char at {v['final_chars']:,} characters "
                       f"trained, below the best validated {v['best_loss']:.4f}")
        else:
            click.echo(f"validation     {v['loss']:.4f} nats/char last ({v['count']:,} validations); this is the best "
                       f"model: {v['best_loss']:.4f} nats/char at {v['best_chars']:,} characters trained")
    if d["dropout"]:
        click.echo(f"dropout        {d['dropout']:g} while training")
    for line in _curve(d["history"]):
        click.echo(line)
