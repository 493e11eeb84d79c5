"""Plugins: text sources and samplers found through entry points, loaded only when used.

A plugin is an entry point in one of two groups, declared in the plugin's own `pyproject.toml`:

    [project.entry-points."charstream.sources"]
    myscheme = "my_package.sources:open_myscheme"   # (source: str) -> Iterable[str]

    [project.entry-points."charstream.samplers"]
    mysampler = "my_package.samplers:pick"           # (probs: np.ndarray, rng: np.random.Generator) -> int

A source's name is a URI scheme: `charstream train myscheme://anything` calls the object with the
whole string `"myscheme://anything"` and trains on the str it yields (bytes are decoded as UTF-8).
A sampler gets the next character's probabilities (float64, summing to 1, in vocabulary order, after
--temperature/--top-k/--top-p) and the generator's `numpy.random.Generator`; it returns an index.

charstream's own sources and samplers are entry points in the same groups, read from its installed
metadata, or from the table below when it runs without metadata (e.g. from a source folder). They
come first: a plugin cannot replace them, and of two plugins with one name the first found wins
(`charstream plugins` shows which). $CHARSTREAM_PLUGINS, if set, lists the distributions whose
plugins may load (comma-separated; empty: built-ins only).
"""
import functools
import os
import sys
import warnings
from dataclasses import dataclass
from importlib import metadata
from importlib.metadata import entry_points   # replaceable, like importlib.metadata.entry_points

_STDLIB_ENTRY_POINTS = entry_points

from .errors import CharstreamError, CharstreamWarning, one_line

SOURCES = "charstream.sources"
SAMPLERS = "charstream.samplers"
GROUPS = (SOURCES, SAMPLERS)
KIND = {SOURCES: "source", SAMPLERS: "sampler"}

BUILTINS = {   # mirrors [project.entry-points] in pyproject.toml
    SOURCES: {"file": "charstream.sources:open_file", "tcp": "charstream.sources:open_tcp"},
    SAMPLERS: {"temperature": "charstream.samplers:temperature", "greedy": "charstream.samplers:greedy",
               "top-k": "charstream.samplers:top_k_default", "top-p": "charstream.samplers:top_p_default"},
}
DIST = "charstream"


class PluginError(CharstreamError):
    """A plugin that is missing, fails to import, or is not callable; the message names it."""


@dataclass(frozen=True)
class Plugin:
    """One entry point: its group, name, `module:attr` value and the distribution it comes from."""

    group: str
    name: str
    value: str
    origin: str            # "charstream 0.1.0, built-in", "fake-dist 1.0", ...
    builtin: bool
    entry_point: object    # an importlib.metadata.EntryPoint
    shadowed_by: str = ""  # the origin of the plugin that won the name, if not this one

    def load(self):
        """Import the object; PluginError with a one-line message if that fails or it is no callable."""
        try:
            obj = self.entry_point.load()
        except (Exception, SystemExit) as e:   # a module that calls sys.exit() on import
            raise PluginError(f"{KIND[self.group]} plugin {self.name!r} ({self.value}, from {self.origin}) "
                              f"failed to load: {one_line(e)}") from None
        if not callable(obj):
            raise PluginError(f"{KIND[self.group]} plugin {self.name!r} ({self.value}, from {self.origin}) "
                              f"is not callable")
        return obj


def _entry_points(group):
    """[(entry point, distribution name or None, version)] of `group`, from
    `importlib.metadata.entry_points()`. If that fails because one distribution's metadata is
    unreadable, the distributions are read one by one and that one is skipped with a warning,
    rather than breaking every command."""
    fn = entry_points if entry_points is not _STDLIB_ENTRY_POINTS else metadata.entry_points
    try:
        eps = fn()
    except Exception:
        return list(_scan_distributions(group, tuple(sys.path)))
    if hasattr(eps, "select"):
        eps = eps.select(group=group)
    elif isinstance(eps, dict):              # Python 3.9
        eps = eps.get(group, ())
    else:
        eps = [ep for ep in eps if getattr(ep, "group", None) == group]
    return [(ep, *_dist_of(ep)) for ep in eps]


def _dist_of(ep):
    dist = getattr(ep, "dist", None)         # None on Python 3.9, or for a hand-made EntryPoint
    if dist is None:
        return None, ""
    try:
        return dist.metadata["Name"], dist.version
    except Exception:
        return None, ""


@functools.lru_cache(maxsize=8)
def _scan_distributions(group, path):
    out, seen = [], set()
    for dist in metadata.distributions(path=list(path)):
        try:
            name, version = dist.metadata["Name"], dist.version
            if _norm(name) in seen:
                continue
            seen.add(_norm(name))
            eps = [ep for ep in dist.entry_points if ep.group == group]
        except Exception as e:
            where = getattr(dist, "_path", None) or "a distribution"
            warnings.warn(f"skipping the plugins of {where}: unreadable metadata "
                          f"({type(e).__name__}: {e})", CharstreamWarning, stacklevel=2)
            continue
        out.extend((ep, name, version) for ep in eps)
    return tuple(out)


def _path_state():
    """sys.path with each folder's mtime: it changes when a distribution is added or removed."""
    state = []
    for p in sys.path:
        try:
            state.append((p, os.stat(p or ".").st_mtime_ns))
        except OSError:
            state.append((p, None))
    return tuple(state)


def _allowed():
    env = os.environ.get("CHARSTREAM_PLUGINS")
    if env is None:
        return None
    return {_norm(d) for d in env.split(",") if d.strip()}


def _norm(name):
    return (name or "").strip().lower().replace("_", "-")


def discover(group):
    """Every plugin of `group`, built-ins first, then by distribution and name; nothing is imported.
    The scan is cached until sys.path, a folder on it, $CHARSTREAM_PLUGINS or the entry point
    functions change."""
    if group not in GROUPS:
        raise ValueError(f"unknown plugin group {group!r}")
    key = (_path_state(), os.environ.get("CHARSTREAM_PLUGINS"), _entry_points, entry_points, metadata.entry_points)
    return list(_discover(group, key))


@functools.lru_cache(maxsize=16)
def _discover(group, key):
    allowed = _allowed()
    builtins, others = [], []
    for ep, dist, version in _entry_points(group):
        if BUILTINS[group].get(ep.name) == ep.value and _norm(dist or DIST) == DIST:
            origin = f"{dist} {version}, built-in" if dist else "charstream, built-in"
            builtins.append(Plugin(group, ep.name, ep.value, origin, True, ep))
        elif allowed is None or _norm(dist) in allowed:
            origin = f"{dist} {version}" if dist else "a distribution with no name"
            others.append(Plugin(group, ep.name, ep.value, origin, False, ep))
    have = {p.name for p in builtins}
    for name, value in BUILTINS[group].items():   # running without installed metadata
        if name not in have:
            ep = metadata.EntryPoint(name=name, value=value, group=group)
            builtins.append(Plugin(group, name, value, "charstream, built-in", True, ep))
    order = list(BUILTINS[group])
    builtins.sort(key=lambda p: order.index(p.name))
    others.sort(key=lambda p: (p.origin, p.name))
    winners, out = {}, []
    for p in builtins + others:
        if p.name in winners:
            p = Plugin(p.group, p.name, p.value, p.origin, p.builtin, p.entry_point, winners[p.name])
        else:
            winners[p.name] = p.origin
        out.append(p)
    return tuple(out)


def names(group):
    """The names that resolve in `group`, in discovery order."""
    return [p.name for p in discover(group) if not p.shadowed_by]


def find(group, name):
    """The plugin that answers to `name` in `group` (a source's scheme in any case), or None."""
    same = (lambda a, b: a.lower() == b.lower()) if group == SOURCES else (lambda a, b: a == b)
    for p in discover(group):
        if same(p.name, name) and not p.shadowed_by:
            return p
    return None


def load(group, name):
    """The object registered as `name` in `group`, imported now; PluginError if there is none or it breaks."""
    plugin = find(group, name)
    if plugin is None:
        known = ", ".join(names(group)) or "none"
        raise PluginError(f"no {KIND[group]} named {name!r} (known: {known})")
    return plugin.load()
