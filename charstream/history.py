"""The training curve a model keeps: a few hundred points of (characters trained, nats/char, seconds), thinned evenly.

A point closes each time the characters trained cross a multiple of `step`, the smallest
`FIRST_STEP * 2**k` for which the characters trained so far fit in `MAX_POINTS - 1` steps; each
point's loss is the mean nats/char of the chunks since the point before (test-then-train, as
progress reports it). When `step` doubles, pairs of points merge into one (their mean, weighted by
the characters they cover), so the points stay evenly spaced and never exceed MAX_POINTS. It
depends on the characters trained alone, never on the clock or on when progress is reported, so a
resumed run extends it exactly as one long run would have; only the seconds column is wall time.

In the model file's meta: `"history"`, a list of `[chars_trained, nats_per_char, seconds]` or, when
a validation text was scored (charstream.validation), `[chars_trained, nats_per_char, seconds,
val_nats_per_char]`: the last validation loss measured up to that point's characters, since the point
before (null when there was none); readers must accept and ignore further columns. `"history_open"`,
`[nats, chars, seconds]`: the summed loss and characters of the interval not yet closed, and the
seconds of training in all.
"""
import math
import numbers
import time
import warnings

from .errors import CharstreamWarning

MAX_POINTS = 256    # points kept at most, whatever the run's length
FIRST_STEP = 1024   # characters between points while the model is young


def step_for(chars):
    """The spacing of the points once `chars` characters are trained."""
    step = FIRST_STEP
    while chars > step * (MAX_POINTS - 1):
        step *= 2
    return step


class History:
    """The closed `points` and the open interval (`nats` summed over `chars` characters). `seconds`
    is the training time in all, across runs: what the file held, plus the time since this object's
    first chunk."""

    def __init__(self, points=(), nats=0.0, chars=0, seconds=0.0):
        self.points = [list(p) for p in points]
        self.nats, self.chars = float(nats), int(chars)
        self._seconds, self._clock = float(seconds), None   # the clock starts at the first chunk
        self._step = step_for(self.points[-1][0]) if self.points else FIRST_STEP
        self.val = None   # the validation loss measured since the last point closed, for the next point

    @property
    def seconds(self):
        return self._seconds if self._clock is None else self._seconds + time.monotonic() - self._clock

    def add(self, chars_trained, loss, seq_length):
        """One trained chunk (the Trainer calls it): `loss` nats summed over its `seq_length` inputs,
        `chars_trained` in all after it."""
        if self._clock is None:
            self._clock = time.monotonic()
        self.nats += loss
        self.chars += seq_length
        step = self._step
        if chars_trained > step * (MAX_POINTS - 1):
            step = step_for(chars_trained)
            self._thin(step)
        last = self.points[-1][0] if self.points else chars_trained - self.chars
        if chars_trained // step > last // step:
            self.points.append([chars_trained, self.nats / self.chars, round(self.seconds, 3)])
            if self.val is not None:
                self.points[-1].append(self.val)
                self.val = None
            self.nats, self.chars = 0.0, 0

    def validated(self, chars_trained, loss):
        """A validation loss measured at `chars_trained`: the 4th column of the point that closed there
        (or of the next to close)."""
        if self.points and self.points[-1][0] == chars_trained:
            self.points[-1][3:] = [loss]
        else:
            self.val = loss

    def _thin(self, step):
        """Merge the points that now fall in one interval of the new, larger `step`."""
        old, merged, start = self._step, [], None
        for p in self.points:
            span = p[0] - start if start is not None else p[0] - (p[0] // old - 1) * old   # from the step before
            key = -(-(p[0] // old * old) // step)   # the interval of `step` the point's own interval ends in
            if merged and merged[-1][0] == key:
                k, q, w = merged[-1]
                val = p[3:4] if len(p) > 3 and p[3] is not None else q[3:4]   # the later validation
                merged[-1] = (key, [p[0], (q[1] * w + p[1] * span) / (w + span), p[2]] + val, w + span)
            else:
                merged.append((key, list(p[:4]), span))
            start = p[0]
        self.points = [q for _, q, _ in merged]
        self._step = step

    def to_meta(self):
        """The two meta fields, JSON-able."""
        meta = {"history": [list(p) for p in self.points],
                "history_open": [self.nats, self.chars, round(self.seconds, 3)]}
        if self.val is not None:   # a validation loss waiting for the next point
            meta["history_val"] = self.val
        return meta

    @classmethod
    def from_meta(cls, meta, where="the model file"):
        """The history a file's meta holds; an empty one if it has none, or (with a warning) if it is malformed."""
        points, tail = meta.get("history"), meta.get("history_open")
        if points is None and tail is None:
            return cls()
        try:
            history = cls(_checked_points(points, meta.get("chars_trained")), *_checked_open(tail))
            if meta.get("history_val") is not None:
                history.val = _number(meta["history_val"], "the waiting validation loss")
            return history
        except ValueError as e:
            warnings.warn(f"{where}: its training history is malformed ({e}): dropped, the model is intact",
                          CharstreamWarning, stacklevel=3)
            return cls()


def _number(x, what):
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x) or x < 0:
        raise ValueError(f"{what} is {x!r}, not a finite number >= 0")
    return x


def _checked_points(points, chars_trained):
    if not isinstance(points, list) or len(points) > MAX_POINTS:
        raise ValueError(f"not a list of at most {MAX_POINTS} points")
    last = -1
    for p in points:
        if not isinstance(p, list) or len(p) < 3:
            raise ValueError("a point is not a list [chars, nats, seconds]")
        chars = p[0]
        if isinstance(chars, bool) or not isinstance(chars, int) or chars <= last:
            raise ValueError("the characters trained do not increase")
        if isinstance(chars_trained, int) and chars > chars_trained:
            raise ValueError("a point is beyond the characters trained")
        _number(p[1], "a loss")
        _number(p[2], "a time")
        if len(p) > 3 and p[3] is not None:
            _number(p[3], "a validation loss")
        last = chars
    return points


def _checked_open(tail):
    if not isinstance(tail, list) or len(tail) != 3:
        raise ValueError("history_open is not [nats, chars, seconds]")
    nats, chars, seconds = tail
    if isinstance(chars, bool) or not isinstance(chars, int) or chars < 0:
        raise ValueError("history_open's characters are not a whole number")
    return _number(nats, "the open loss"), chars, _number(seconds, "the time")
