"""Training budgets on the command line: --passes over file sources, stop after S seconds."""
import time

import click

from ..errors import CharstreamError
from ..sources import repeat_sources as repeat_any


class BudgetReached(Exception):
    """A --max-seconds budget ran out: stop, save, exit 0."""


def repeat_sources(sources, passes):
    """The sources list repeated `passes` times; a usage error for --passes if one is a stream."""
    try:
        return repeat_any(sources, passes)
    except CharstreamError as e:
        raise click.BadParameter(f"{e}; --passes needs file sources", param_hint="--passes") from None


class Deadline:
    """Raises BudgetReached from `check()` once `seconds` have passed (None: never)."""

    def __init__(self, seconds):
        self.end = None if seconds is None else time.monotonic() + seconds

    def check(self, now=None):
        if self.end is not None and (time.monotonic() if now is None else now) >= self.end:
            raise BudgetReached()
