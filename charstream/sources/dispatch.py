"""Source strings to streams of str: a path, `-`, or a scheme served by a plugin, checked up front."""
import re

from .. import plugins
from ..errors import CharstreamError, SourceFailed, one_line
from .decode import TextSniffer, Utf8Decoder
from .files import check_path, check_stdin, file_path, open_stdin, read_path
from .tcp import parse_address

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme_of(source):
    """The URI scheme of a source (`tcp` for `tcp://...`), lowercased; None for a path or `-`."""
    m = _SCHEME.match(source)
    return m.group(1).lower() if m else None


def check_source(source):
    """Raise CharstreamError now if a source cannot be used (a path that cannot be read, a malformed
    address, a scheme no plugin serves, a broken plugin), before any training starts."""
    if source == "-":
        return check_stdin()
    scheme = scheme_of(source)
    if scheme == "file":
        return check_path(file_path(source))
    if scheme == "tcp":
        parse_address(source[len("tcp://"):], source)
    if scheme is not None:
        _opener(scheme, source)
        return
    check_path(source)


def _opener(scheme, source):
    """The callable registered for `scheme`, loaded now; PluginError naming the source if none is."""
    if plugins.find(plugins.SOURCES, scheme) is None:
        known = ", ".join(plugins.names(plugins.SOURCES))
        raise plugins.PluginError(f"{source}: no source plugin serves the scheme {scheme!r} "
                                  f"(known schemes: {known}); a path with '://' in it can be given as ./PATH")
    return plugins.load(plugins.SOURCES, scheme)


def open_source(source):
    """An iterable of str for a source string (path, `-`, `tcp://HOST:PORT`, `file://PATH` or a
    plugin's `SCHEME://...`), read lazily as the text arrives. A scheme's plugin is called now (so
    `tcp://` connects now); what it yields is checked and decoded as it is read."""
    scheme = scheme_of(source)
    if scheme is not None:
        opener = _opener(scheme, source)
        try:
            texts = opener(source)
            if isinstance(texts, (str, bytes, bytearray, memoryview)):
                texts = [texts]       # the whole text at once, not one character (or int) at a time
            it = iter(texts)
        except CharstreamError:
            raise
        except (Exception, SystemExit) as e:
            raise SourceFailed(f"{source}: the {scheme!r} source failed: {one_line(e)}") from None
        return _checked(it, source, scheme)
    if source == "-":
        return open_stdin()
    return read_path(source)


def _checked(it, source, scheme):
    """A plugin's texts as str: bytes decoded as UTF-8 (incrementally), failures as CharstreamError."""
    dec = sniff = None
    try:
        for text in it:
            if isinstance(text, (bytes, bytearray, memoryview)):
                dec = dec or Utf8Decoder(source)
                sniff = sniff or TextSniffer(source)   # bytes from a plugin meet the binary policy too
                sniff.feed(bytes(text))
                text = dec.decode(bytes(text))
            elif not isinstance(text, str):
                raise CharstreamError(f"{source}: the {scheme!r} source yielded {type(text).__name__}, "
                                      f"not str")
            if text:
                yield text
        if dec is not None:
            sniff.feed(b"", final=True)
            text = dec.decode(b"", final=True)
            if text:
                yield text
    except CharstreamError:
        raise
    except OSError as e:
        raise SourceFailed(f"{source}: {e.strerror or one_line(e)}") from None
    except (Exception, SystemExit) as e:
        raise SourceFailed(f"{source}: the {scheme!r} source failed: {one_line(e)}") from None


def chain_sources(sources):
    """One stream of str from several sources (source strings, or iterables of str), in order."""
    for source in sources:
        yield from (open_source(source) if isinstance(source, str) else source)
