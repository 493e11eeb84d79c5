"""Samplers: how the next character is picked from the model's probabilities.

A sampler is a callable `(probs, rng) -> int`: `probs` is float64 (V,), sums to 1, in vocabulary
order; `rng` is the generation's `numpy.random.Generator`; it returns the index of the next
character. The built-ins (entry points in the `charstream.samplers` group, like any plugin's):

- `temperature`: draw from probs (the default; temperature itself is applied before, to the logits);
- `greedy`: the most probable character (argmax, the first one on ties);
- `top-k`: draw among the k most probable (k = 40 by name; `TopK(k)` or `top_k=k` for another k);
- `top-p`: draw from the smallest set of most probable characters whose mass reaches p (nucleus;
  p = 0.9 by name; `TopP(p)` or `top_p=p` for another p).

`top_k=` and `top_p=` also work as filters in front of any sampler: probs are cut to the k most
probable, then to the nucleus, and renormalised before the sampler sees them.

A sampler the kernel can run declares it: `sampler.compiled_path(top_k, top_p)` returns
`(greedy, k)` for `Kernel.sample` (k = 0: no cut) when the compiled draw picks exactly what the
sampler would with those cuts, else None; samplers without it (plugins, callables) run in Python.
"""
import math
import numbers
import operator

import numpy as np

from . import plugins
from .errors import CharstreamError

DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.9


def temperature(probs, rng):
    """Draw an index from probs by inverse CDF at one uniform of rng."""
    c = np.cumsum(probs)
    return min(int(np.searchsorted(c, rng.random() * c[-1], side="right")), len(probs) - 1)


def greedy(probs, rng):
    """The index of the largest probability."""
    return int(np.argmax(probs))


temperature.compiled_path = lambda top_k, top_p: (False, top_k or 0) if top_p is None else None
greedy.compiled_path = lambda top_k, top_p: (True, 0) if top_k is None and top_p is None else None


def _optional_int(value, name, low, what):
    """None, or value as an int if it is an integer (not a bool) of at least low: else ValueError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def check_temperature(t):
    """t as a float if it is a finite number above 0 whose inverse is finite too: else ValueError
    (the one check of the library, the CLI and the server; 5e-324 would make every logit infinite)."""
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be a positive number, got {t!r}")
    if math.isinf(1.0 / float(t)):
        raise ValueError(f"temperature {t} is too small (its inverse overflows)")
    return float(t)


def check_top_k(k):
    return _optional_int(k, "top_k", 1, "a positive integer")


def check_top_p(p):
    if p is None:
        return None
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 < p <= 1) or math.isnan(p):
        raise ValueError(f"top_p must be a number in (0, 1], got {p!r}")
    return float(p)


def cut_top_k(probs, k):
    """probs with all but the k largest set to 0, renormalised (in place, and returned)."""
    if k < len(probs):
        probs[np.argpartition(probs, len(probs) - k)[:len(probs) - k]] = 0.0
        probs /= probs.sum()
    return probs


def cut_top_p(probs, p):
    """probs with all but the smallest most-probable set of mass >= p set to 0, renormalised."""
    order = np.argsort(-probs, kind="stable")
    n = min(int(np.searchsorted(np.cumsum(probs[order]), p)) + 1, len(probs))
    probs[order[n:]] = 0.0
    probs /= probs.sum()
    return probs


class TopK:
    """Draw among the k most probable characters (`by_name`: the "top-k" sampler, whose k a given
    top_k replaces)."""

    def __init__(self, k=DEFAULT_TOP_K, by_name=False):
        self.k = check_top_k(k)
        self.by_name = by_name

    def with_cuts(self, top_k, top_p):
        if top_k is not None and self.by_name:
            return temperature, top_k, top_p     # "top-k" with top_k=K is the K cut, then a draw
        return self, top_k, top_p

    def compiled_path(self, top_k, top_p):
        return (False, self.k) if top_k is None and top_p is None else None   # the cut, then a draw

    def __call__(self, probs, rng):
        return temperature(cut_top_k(np.array(probs, dtype=np.float64), self.k), rng)

    def __repr__(self):
        return f"TopK({self.k})"


class TopP:
    """Draw from the nucleus: the fewest most-probable characters whose mass reaches p (`by_name`:
    the "top-p" sampler, whose p a given top_p replaces)."""

    def __init__(self, p=DEFAULT_TOP_P, by_name=False):
        self.p = check_top_p(p)
        self.by_name = by_name

    def with_cuts(self, top_k, top_p):
        if top_p is not None and self.by_name:
            return temperature, top_k, top_p     # "top-p" with top_p=P is the P cut, then a draw
        return self, top_k, top_p

    def __call__(self, probs, rng):
        return temperature(cut_top_p(np.array(probs, dtype=np.float64), self.p), rng)

    def __repr__(self):
        return f"TopP({self.p})"


top_k_default = TopK(by_name=True)
top_p_default = TopP(by_name=True)


def with_cuts(pick, top_k, top_p):
    """(pick, top_k, top_p) with a by-name sampler's own cut replaced by a given one."""
    adjust = getattr(pick, "with_cuts", None)
    return adjust(top_k, top_p) if adjust is not None else (pick, top_k, top_p)


def compiled_path(pick, top_k, top_p):
    """`(greedy, k)` for Kernel.sample when `pick` declares that it runs compiled with these cuts."""
    path = getattr(pick, "compiled_path", None)
    return path(top_k, top_p) if path is not None else None


def resolve(sampler):
    """(name, callable) for a sampler given by name (a built-in or plugin), as a callable, or None
    (the default, `temperature`); PluginError if the name is unknown or its plugin is broken."""
    if sampler is None:
        sampler = "temperature"
    if isinstance(sampler, str):
        return sampler, plugins.load(plugins.SAMPLERS, sampler)
    if not callable(sampler):
        raise TypeError(f"sampler must be a name or a callable (probs, rng) -> int, got {sampler!r}")
    return getattr(sampler, "__name__", repr(sampler)), sampler


def block_sizes(n, max_block, length=None):
    """The lengths of the blocks a generation samples: n, 2n, 4n ... up to max_block, endless, or,
    given `length`, only as many characters as that in all (the last block cut to what is left)."""
    left = length
    while left is None or left > 0:
        size = n if left is None else min(n, left)
        yield size
        if left is not None:
            left -= size
        n = min(2 * n, max_block)


def check_length(length):
    return _optional_int(length, "length", 0, "a non-negative integer or None")


def pick_blocks(vocab, kernel, h, temp, name, pick, top_k, top_p, rng, sizes, max_block):
    """Strings of the lengths `sizes` gives (`block_sizes`; none longer than max_block), each
    character picked by `pick` from softmax(y / temp) cut to top_k, then top_p; h is stepped
    through each pick."""
    V = len(vocab)
    p = np.empty(V)
    x = np.empty(1, dtype=np.int32)
    out = np.empty(max_block, dtype=np.int32)
    for n in sizes:
        for i in range(n):
            kernel.probs(h, p, temp)
            if top_k is not None:
                cut_top_k(p, top_k)
            if top_p is not None:
                cut_top_p(p, top_p)
            try:
                r = pick(p, rng)
            except (Exception, SystemExit) as e:
                raise CharstreamError(f"sampler {name!r} failed: {type(e).__name__}: {e}") from e
            try:
                k = operator.index(r)
            except TypeError:
                k = -1
            if not 0 <= k < V:
                raise CharstreamError(f"sampler {name!r} returned {r!r}, not an index in [0, {V})")
            out[i] = x[0] = k
            kernel.step(x, h)
        yield vocab.decode(out[:n])
