"""Training budgets: repeat file sources (--passes), stop after N characters or S seconds."""
import os
import time

import click


class BudgetReached(Exception):
    """A --max-seconds budget ran out: stop, save, exit 0."""


def repeat_sources(sources, passes):
    """The sources list repeated `passes` times; only regular files can be read again."""
    if passes == 1:
        return list(sources)
    streams = [s for s in sources if not os.path.isfile(_path_of(s))]
    if streams:
        raise click.BadParameter(f"{streams[0]} is a stream, which cannot be read twice; "
                                 f"--passes needs file sources", param_hint="--passes")
    return list(sources) * passes


def _path_of(source):
    """The path a file source reads: PATH itself, or the PATH of file://PATH (any case of the scheme)."""
    from ..sources import _file_path, scheme_of
    return _file_path("file://" + source.split("://", 1)[1]) if scheme_of(source) == "file" else source


def limit_chars(texts, n):
    """The stream of str cut after `n` characters in all (None: no limit)."""
    if n is None:
        yield from texts
        return
    left = n
    if left <= 0:
        return
    for text in texts:
        if len(text) >= left:
            yield text[:left]
            return
        left -= len(text)
        yield text


class Deadline:
    """Raises BudgetReached from `check()` once `seconds` have passed (None: never)."""

    def __init__(self, seconds):
        self.end = None if seconds is None else time.monotonic() + seconds

    def check(self, now=None):
        if self.end is not None and (time.monotonic() if now is None else now) >= self.end:
            raise BudgetReached()
