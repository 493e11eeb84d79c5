"""Ctrl-C and SIGTERM as exceptions that are raised only where the model is whole, never mid-update.

Python raises KeyboardInterrupt between any two bytecodes. Inside the trainer that can land between
a chunk's update and its bookkeeping, or halfway through growing the vocabulary (parameters grown,
Adagrad memories not yet), and the save that follows would write a model that cannot resume. So
while a signal is *deferred* it is only noted, and raised as soon as the deferred block ends; where
it is *allowed* (waiting for input, printing progress) it is raised at once, so a blocked read or
write never keeps the process from stopping.
"""
import contextlib
import signal


class Terminated(BaseException):
    """SIGTERM (or SIGHUP), raised in the main thread like KeyboardInterrupt is for SIGINT."""

    def __init__(self, signum=signal.SIGTERM):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self):
        return 128 + self.signum


def exit_code(interrupt):
    """130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP: the shell's 128 + signal number."""
    return interrupt.exit_code if isinstance(interrupt, Terminated) else 128 + signal.SIGINT


class Interrupts:
    """SIGINT -> KeyboardInterrupt; SIGTERM, SIGHUP (a closed terminal; unless ignored, as under
    nohup) -> Terminated; allowed unless inside `deferred()`."""

    def __init__(self):
        self.allowing = True
        self.pending = None     # the exception of a signal noted while deferred
        self.stopped = False    # once one signal was raised, or after `stop()`: signals are only noted

    def _handler(self, signum, frame):
        exc = KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)
        if self.allowing and not self.stopped:
            self.stopped = True   # one signal is raised; later ones must not cut its save short
            raise exc
        if self.pending is None:
            self.pending = exc

    @contextlib.contextmanager
    def installed(self):
        """Handle SIGINT and SIGTERM within the block (main thread only); old handlers come back after."""
        try:
            old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
            hup = getattr(signal, "SIGHUP", None)
            if hup is not None and signal.getsignal(hup) is not signal.SIG_IGN:
                old[hup] = signal.signal(hup, self._handler)
        except ValueError:   # not the main thread: leave signals alone
            yield self
            return
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def check(self):
        """Raise a signal noted while deferred."""
        if self.pending is not None and not self.stopped:
            exc, self.pending = self.pending, None
            self.stopped = True
            raise exc

    @contextlib.contextmanager
    def deferred(self):
        """Signals within the block are raised when it ends (if the block around it allows them)."""
        outer, self.allowing = self.allowing, False
        try:
            yield
        finally:
            self.allowing = outer
        if outer:
            self.check()

    @contextlib.contextmanager
    def allowed(self):
        outer, self.allowing = self.allowing, True
        try:
            self.check()
            yield
        finally:
            self.allowing = outer

    def stop(self):
        """From now on signals are only noted: the process is already on its way out, saving."""
        self.stopped = True

    def deferring(self, iterable):
        """Iterate with signals deferred while the iterable computes its next item."""
        return _each_within(iterable, self.deferred)

    def allowing_in(self, iterable):
        """Iterate with signals allowed while waiting for the next item (e.g. text from a pipe)."""
        return _each_within(iterable, self.allowed)


def _each_within(iterable, context):
    """Yield the items of `iterable`, each `next()` inside `context()`; close it when done."""
    it = iter(iterable)
    try:
        while True:
            with context():
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item
    finally:
        _close(it)


def _close(it):
    close = getattr(it, "close", None)
    if close is not None:
        close()
