"""`charstream info`: what a model file holds, for people and (with --json) for scripts."""
import json
import math
import os
import unicodedata

import click

from .. import cells
from .._kernel import ISA
from ..scoring import LN2
from .common import load_model, model_option, resolve_model_path


FIRST_WEIGHT = 0.999   # the smoothed loss starts at the first chunk's loss, then s = 0.999 s + 0.001 loss


def _shown(c):
    """A vocabulary character as the preview shows it: escaped when it is invisible or would merge
    with its neighbour on screen (controls, format characters, combining marks, emoji modifiers)."""
    if c.isprintable() and not unicodedata.category(c).startswith("M") and not 0x1F3FB <= ord(c) <= 0x1F3FF:
        return c
    return c.encode("unicode_escape").decode("ascii")


def describe(model, path):
    """The figures `charstream info` prints, as a dict."""
    st = model.state
    nparams = sum(v.size for v in model.params.values())
    recent = st.smooth_loss / st.seq_length if not math.isnan(st.smooth_loss) else None
    return {
        "path": os.path.abspath(path),
        "format_version": model.file_format_version,
        "file_bytes": os.path.getsize(path),
        "cell": model.cell,
        "layers": model.layers,
        "hidden_size": model.hidden_size,
        "vocab_size": model.vocab_size,
        "vocab_preview": "".join(model.vocab[:80]),
        "parameters": int(nparams),
        "seq_length": st.seq_length,
        "learning_rate": st.learning_rate,
        "optimizer": cells.OPTIMIZER[model.cell],
        "chars_seen": st.chars_seen,
        "chunks_trained": st.chunks,
        "chars_trained": st.chars_trained,
        "untrained_tail": int(len(st.tail)),
        "recent_nats_per_char": recent,
        "recent_bits_per_char": None if recent is None else recent / LN2,
        "kernel_isa": ISA,   # the compiled path this process runs (docs/build.md)
    }


@click.command()
@model_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(model_path, as_json):
    """Describe a model: sizes, vocabulary, training so far, recent loss, file.

    The recent loss is min-char-rnn's smoothed loss (an average over roughly the last 1,000 chunks,
    which starts at the first chunk's loss: on a young model it still leans on that one, as shown).

    \b
    Examples:
      charstream info
      charstream info --model log.npz --json | jq .vocab_size
    """
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
    click.echo(f"cell           {d['cell']}, {d['layers']} layer{'' if d['layers'] == 1 else 's'}")
    click.echo(f"hidden size    {d['hidden_size']}")
    click.echo(f"vocabulary     {d['vocab_size']} character{'' if d['vocab_size'] == 1 else 's'}: {preview}"
               + ("..." if d["vocab_size"] > 80 else ""))
    click.echo(f"parameters     {d['parameters']:,}")
    click.echo(f"training       seq_length {d['seq_length']}, {d['optimizer']}, learning rate {d['learning_rate']:g}")
    click.echo(f"trained        {d['chunks_trained']:,} chunks, {d['chars_seen']:,} characters seen "
               f"({d['untrained_tail']} in the untrained tail)")
    click.echo(f"recent loss    {recent}")
