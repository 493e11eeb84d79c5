"""Learning-rate annealing over a known budget: the base rate, then a linear fall over its last part."""

FINAL = 0.05   # the scale at the end of the budget (0.01 and 0.1 measured no better for the lstm: docs/cells.md)


def anneal_scale(progress, fraction, final=FINAL):
    """The learning rate's multiplier at `progress` (0 at the start of the budget, 1 at its end): 1
    until the last `fraction` of the budget, then linear down to `final` at its end (and after it).

    Equivalent to `np.interp(progress, [0, 1 - fraction, 1], [1, 1, final])` for 0 < fraction <= 1;
    a fraction of 0 is no annealing (always 1).
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"the annealed fraction must be between 0 and 1, got {fraction!r}")
    if not 0 < final <= 1:
        raise ValueError(f"the final scale must be in (0, 1], got {final!r}")
    if fraction == 0 or progress <= 1 - fraction:
        return 1.0
    return 1.0 - (1.0 - final) * min((progress - (1 - fraction)) / fraction, 1.0)


class Anneal:
    """Anneals a Trainer's learning rate over a budget of seconds and/or characters trained.

    `update(trainer, seconds, chars)` (seconds since the budget began, characters trained since)
    sets `trainer.lr_scale` from the progress through whichever budget is further along. Without
    a budget, or with fraction 0, the scale stays 1: a stream with no end learns at its base rate.
    """

    def __init__(self, fraction, seconds=None, chars=None, final=FINAL):
        anneal_scale(0.0, fraction, final)   # checks fraction and final
        self.fraction, self.seconds, self.chars, self.final = fraction, seconds, chars, final

    @property
    def active(self):
        return self.fraction > 0 and (self.seconds is not None or self.chars is not None)

    def progress(self, seconds, chars):
        """How far through the budget, 0 to 1 (0 without a budget)."""
        p = 0.0
        if self.seconds is not None and self.seconds > 0:
            p = max(p, seconds / self.seconds)
        if self.chars is not None and self.chars > 0:
            p = max(p, chars / self.chars)
        return min(p, 1.0)

    def update(self, trainer, seconds, chars):
        if self.active:
            trainer.lr_scale = anneal_scale(self.progress(seconds, chars), self.fraction, self.final)
