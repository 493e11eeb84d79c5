"""`charstream corpus`: print the small public-domain corpus shipped with charstream."""
from importlib.resources import files

import click

from .common import quiet_exit


@click.command()
@click.option("--path", "show_path", is_flag=True, help="Print the corpus file's path instead.")
def corpus(show_path):
    """Print the shipped corpus (100 kB of Shakespeare, public domain) to stdout.

    \b
    Example:
      charstream corpus | charstream train -
    """
    resource = files("charstream") / "data" / "shakespeare.txt"
    try:
        if show_path:
            click.echo(str(resource))
        else:
            click.echo(resource.read_text(encoding="utf-8"), nl=False)
    except BrokenPipeError:
        quiet_exit(0)
