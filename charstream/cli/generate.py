"""`charstream generate`: write the prompt (`--seed`) and a sampled continuation to stdout as it is produced."""
import json
import os
import secrets
import sys

import click

from .. import plugins, samplers
from ..errors import CharstreamError
from .common import (FiniteFloat, Terminated, fail, load_model, model_option, quiet_exit, resolve_model_path,
                     show_warnings, sigterm_raises)

MAX_SAMPLES = 4096   # --samples: the lanes of one batch


@click.command()
@model_option
@click.option("--prompt", "--seed", "prompt", default="",
              help="Text that primes the hidden state; it is printed first (--seed: the same, its first name).")
@click.option("--length", type=click.IntRange(min=0), default=None,
              help="Characters to write after the prompt (default: no end).")
@click.option("--temperature", type=FiniteFloat(min=0, min_open=True), default=1.0, show_default=True,
              help="Below 1 is more conservative, above 1 more adventurous.")
@click.option("--top-k", type=click.IntRange(min=1), default=None, metavar="K",
              help="Sample only among the K most probable characters (with --sampler top-k: its K, default 40).")
@click.option("--top-p", type=FiniteFloat(min=0, max=1, min_open=True), default=None, metavar="P",
              help="Sample only from the most probable characters whose probabilities add up to P (nucleus).")
@click.option("--sampler", default="temperature", show_default=True, metavar="NAME",
              help="How the next character is picked: temperature (draw from the probabilities), "
                   "greedy (the most probable), top-k, top-p, or a plugin's sampler (see `charstream plugins`).")
@click.option("--random-seed", type=click.IntRange(min=0), default=None,
              help="Seed of the sampler's random numbers: the same one gives the same text.")
@click.option("--fresh-state", is_flag=True,
              help="Start from a zero hidden state instead of the state training left (see docs/quality.md).")
@click.option("--samples", type=click.IntRange(1, MAX_SAMPLES), default=None, metavar="N",
              help="Write N samples, generated together (needs --length): sample i has random seed S + i, "
                   "S being --random-seed or one drawn at random; each is headed by its index and seed.")
@click.option("--json", "as_json", is_flag=True,
              help="With --samples: one JSON object per line, {\"index\", \"random_seed\", \"text\"} "
                   "(text: the prompt and the continuation), in index order.")
def generate(model_path, prompt, length, temperature, top_k, top_p, sampler, random_seed, fresh_state, samples,
             as_json):
    """Write the prompt (--seed or --prompt) then text sampled from the model to stdout, one
    character after another.

    The hidden state starts where training left it, with the prompt read on top. With --length N
    exactly the prompt and N characters are written (and a newline, only when stdout is a terminal).

    \b
    Examples:
      charstream generate --seed "To be" --length 500
      charstream generate --seed "To be" | less
      charstream generate --temperature 0.7 --random-seed 1 | head -c 100
      charstream generate --top-p 0.9 --length 500
      charstream generate --sampler greedy --seed "To be" --length 80
      charstream generate --samples 4 --length 200 --random-seed 7
      charstream generate --samples 8 --length 200 --json | jq -r .text
    """
    show_warnings()
    if as_json and samples is None:
        raise click.BadParameter("--json needs --samples N.", param_hint="'--json'")
    if samples is not None and length is None:
        raise click.BadParameter("--samples needs --length: samples without an end cannot be told apart.",
                                 param_hint="'--samples'")
    try:   # Ctrl-C ends it with 130, SIGTERM like a closed pipe with 0; never a traceback
        with sigterm_raises():
            _generate(model_path, prompt, length, temperature, top_k, top_p, sampler, random_seed, fresh_state,
                      samples, as_json)
    except KeyboardInterrupt:
        _stop(130)
    except Terminated:
        _stop(0)


def _stop(code):
    """Exit now: output still buffered for a pipe nobody reads must not block the way out."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):   # no descriptor (tests): nothing can block
        pass
    quiet_exit(code)


def _generate(model_path, prompt, length, temperature, top_k, top_p, sampler, random_seed, fresh_state,
              samples=None, as_json=False):
    try:
        samplers.check_temperature(temperature)
    except ValueError:
        raise click.BadParameter(f"{temperature} is too small (its inverse overflows).",
                                 param_hint="'--temperature'") from None
    if plugins.find(plugins.SAMPLERS, sampler) is None:
        raise click.BadParameter(f"no sampler named {sampler!r} (known: {', '.join(plugins.names(plugins.SAMPLERS))})",
                                 param_hint="'--sampler'")
    model = load_model(resolve_model_path(model_path))
    if samples is not None:
        return _samples(model, samples, as_json, random_seed, dict(
            prompt=prompt, temperature=temperature, sampler=sampler, top_k=top_k, top_p=top_p,
            fresh_state=fresh_state, length=length))
    try:
        blocks = model.generate_blocks(prompt, temperature, random_seed, sampler=sampler, top_k=top_k, top_p=top_p,
                                       fresh_state=fresh_state, length=length)
    except (ValueError, CharstreamError) as e:
        raise fail(e)
    if sys.stdout is None:   # `>&-`
        raise click.ClickException("stdout is closed: there is nowhere to write the text")
    out = sys.stdout.buffer
    try:
        out.write(prompt.encode("utf-8", "surrogateescape"))
        out.flush()
        for block in blocks:   # exactly --length characters in all, if given
            out.write(_utf8(block))
            out.flush()
        if length is not None and _isatty(sys.stdout):   # a pipe gets exactly prompt + N characters
            out.write(b"\n")
            out.flush()
    except BrokenPipeError:
        quiet_exit(0)
    except CharstreamError as e:   # a sampler plugin that fails or returns a bad index
        out.flush()
        raise fail(e)


def _samples(model, n, as_json, random_seed, request):
    """N samples generated together (Model.generate_many), sample i with random seed S + i: each
    written whole as it ends, in index order, headed `==> sample i, random seed s <==` (or as JSON)."""
    base = secrets.randbits(63) if random_seed is None else random_seed
    seeds = [base + i for i in range(n)]
    try:
        pieces = model.generate_many([dict(request, random_seed=s) for s in seeds])
    except (ValueError, CharstreamError) as e:
        raise fail(e)
    if sys.stdout is None:
        raise click.ClickException("stdout is closed: there is nowhere to write the text")
    out = sys.stdout.buffer
    texts, left, written = [[] for _ in range(n)], [request["length"]] * n, 0

    def write(i):
        text = request["prompt"] + "".join(texts[i])
        if as_json:
            line = json.dumps({"index": i, "random_seed": seeds[i], "text": text}, ensure_ascii=False)
            out.write(line.encode("utf-8", "surrogateescape") + b"\n")
        else:
            out.write(f"{'' if i == 0 else chr(10)}==> sample {i}, random seed {seeds[i]} <==\n".encode())
            out.write(_utf8(text) + b"\n")
        out.flush()

    try:
        for i, piece in pieces:
            texts[i].append(piece)
            left[i] -= len(piece)
            while written < n and left[written] == 0:   # in index order, each as soon as it and those before end
                write(written)
                written += 1
        while written < n:
            write(written)
            written += 1
    except BrokenPipeError:
        quiet_exit(0)
    except CharstreamError as e:
        out.flush()
        raise fail(e)


def _isatty(stream):
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return False


def _utf8(text):
    """UTF-8 bytes of generated text. A lone surrogate (only in a vocabulary from an older model file
    that learned surrogate-escaped bytes) is written back as the byte it stands for, else as U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return b"".join(_char_bytes(c) for c in text)


def _char_bytes(c):
    try:
        return c.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return "\ufffd".encode("utf-8")
