"""What every command shares: the model location, loading with clear errors, warnings and signals."""
import contextlib
import math
import os
import signal
import sys
import warnings

import click

from ..errors import CharstreamError, CharstreamWarning
from ..model import Model
from .interrupts import Terminated


def default_model_path():
    """$CHARSTREAM_MODEL, else $XDG_DATA_HOME/charstream/model.npz (~/.local/share by default)."""
    env = os.environ.get("CHARSTREAM_MODEL")
    if env:
        return env
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "charstream", "model.npz")


model_option = click.option(
    "--model", "model_path", metavar="PATH", default=None,
    help="Model file. Default: $CHARSTREAM_MODEL, else ~/.local/share/charstream/model.npz.")


def resolve_model_path(model_path):
    if model_path == "":
        raise click.BadParameter("the path is empty", param_hint="--model")
    return model_path or default_model_path()


def load_model(path):
    """Load a model or exit with `Error: <path>: <problem>`, saying how to train one if it is missing."""
    if not os.path.exists(path):
        raise click.ClickException(
            f"no model at {path}: train one first, e.g. `charstream corpus | charstream train -`")
    try:
        return Model.load(path)
    except CharstreamError as e:
        raise click.ClickException(str(e)) from None


def show_warnings():
    """Print CharstreamWarnings as `Warning: ...` lines on stderr instead of Python's format."""
    def show(message, category, filename, lineno, file=None, line=None):
        say(f"Warning: {message}")
    warnings.showwarning = show
    warnings.simplefilter("always", CharstreamWarning)


class FiniteFloat(click.FloatRange):
    """A FloatRange that also refuses nan and inf (which compare False to any bound)."""

    name = "float"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


@contextlib.contextmanager
def sigterm_raises():
    """Within the block, SIGTERM raises Terminated in the main thread; the old handler comes back after."""
    def handler(signum, frame):
        raise Terminated()
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:   # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def say(message):
    """A line on stderr that is not worth dying for: a closed stderr must not stop a save."""
    try:
        click.echo(message, err=True)
    except (OSError, ValueError):
        pass


def fail(e):
    """A ClickException from a library error, its message on one line."""
    return click.ClickException(str(e).splitlines()[0] if str(e) else type(e).__name__)


def quiet_exit(code):
    """Exit without Python complaining about a closed stdout on the way out."""
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    sys.exit(code)
