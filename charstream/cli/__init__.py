"""The `charstream` command: a thin click group over the library, one module per command."""
import click

from .. import __version__
from .._kernel import ISA, openmp
from .corpus import corpus
from .eval import eval_
from .generate import generate
from .info import info
from .plugins import plugins
from .serve import serve
from .train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="charstream", message=f"%(prog)s %(version)s (kernel: {ISA}, "
                      + ("threads: OpenMP)" if openmp() else "threads: 1, built without OpenMP)"))
def main():
    """Learn a character-level RNN from a stream of text and write text back one character at a time.

    \b
    Example:
      charstream corpus | charstream train -
      charstream generate --seed "To be" --length 300
    """


for command in (train, generate, eval_, info, corpus, plugins, serve):
    main.add_command(command)
