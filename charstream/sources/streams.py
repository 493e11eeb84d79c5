"""Stream helpers: read in the background with idle callbacks, cut after N characters, repeat files."""
import os
import queue
import threading

from ..errors import CharstreamError
from .dispatch import scheme_of
from .files import path_of


def repeat_sources(sources, passes):
    """The sources list repeated `passes` times; CharstreamError if one is not a regular file (a
    stream, which cannot be read again)."""
    if passes == 1:
        return list(sources)
    for source in sources:
        path = path_of(source, scheme_of(source))
        if path is None or not os.path.isfile(path):
            raise CharstreamError(f"{source} is a stream, which cannot be read twice")
    return list(sources) * passes


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


def with_idle(texts, every, on_idle, prefetch=4):
    """Yield from `texts` (read in a background thread), calling `on_idle()` in the caller's thread
    whenever no text has arrived for `every` seconds, e.g. to checkpoint while a pipe is quiet.

    When the caller stops early (closes this generator), the reader thread ends at its next text
    instead of waiting forever on a full queue (a read it is blocked in cannot be cut short).
    """
    q = queue.Queue(maxsize=prefetch)
    done, stop = object(), threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def reader():
        try:
            for text in texts:
                if not put(text):
                    return
            put(done)
        except BaseException as e:   # handed to the caller's thread, raised there
            put(_Raised(e))

    thread = threading.Thread(target=reader, name="charstream-reader", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = q.get(timeout=every) if every else q.get()
            except queue.Empty:
                on_idle()
                continue
            if item is done:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()


class _Raised:
    """An exception from the reader thread, in transit."""

    def __init__(self, error):
        self.error = error
