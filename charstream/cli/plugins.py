"""`charstream plugins`: list the sources and samplers that are registered, and where each comes from."""
import click

from .. import plugins as registry
from .common import show_warnings


@click.command()
@click.option("--no-load", is_flag=True, help="List the entry points without importing them.")
def plugins(no_load):
    """List the source schemes and samplers charstream can use: name, `module:object`, and the
    distribution that provides it. Each is imported to check it; a broken one is marked with its
    error (and the exit status is 1), which affects only the commands that use it.

    \b
    Example:
      charstream plugins
      charstream train myscheme://somewhere    # a scheme listed under "sources"
      charstream generate --sampler mysampler  # a name listed under "samplers"
    """
    show_warnings()
    broken = 0
    for group, title in ((registry.SOURCES, "sources (charstream train SCHEME://...)"),
                         (registry.SAMPLERS, "samplers (charstream generate --sampler NAME)")):
        click.echo(f"{title}:")
        found = registry.discover(group)
        width = max([len(p.name) for p in found] + [4])
        for p in found:
            status = ""
            if p.shadowed_by:
                status = f"  [not used: the name is taken by {p.shadowed_by}]"
            elif not no_load:
                try:
                    p.load()
                except registry.PluginError as e:
                    broken += 1
                    status = f"  [broken: {str(e).split(' failed to load: ', 1)[-1]}]"
                    click.echo(f"Error: {e}", err=True)
            click.echo(f"  {p.name:<{width}}  {p.value}  from {p.origin}{status}")
        if not found:
            click.echo("  (none)")
    if broken:
        raise SystemExit(1)
