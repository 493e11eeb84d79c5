"""Generations as the server runs them: text in pieces, cut at the length and the stop sequences, read together per request, bounded in number."""
import asyncio
import threading


class Cutter:
    """One generation's text cut into (text, finish_reason) pieces: at most `length` characters in all
    (None: no end), cut before the first stop sequence. finish_reason is None until the last piece,
    which says "stop" or "length". Text that may begin a stop sequence is held back until it cannot."""

    def __init__(self, length, stops=()):
        self.stops, self.left = stops, length
        self.hold = max(map(len, stops), default=1) - 1
        self.pending = ""
        self.finished = False

    def start(self):
        """The pieces due before any text: the whole of a generation of length 0."""
        if self.left == 0:
            self.finished = True
            return [("", "length")]
        return []

    def feed(self, block):
        """The pieces `block` completes (after `finished`, none)."""
        if self.finished:
            return []
        if self.left is not None:
            block = block[:self.left]
            self.left -= len(block)
        self.pending += block
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.finished = True
            return [(self.pending[:cut], "stop")]
        if self.left == 0:
            self.finished = True
            return [(self.pending, "length")]
        n = len(self.pending) - self.hold
        if n > 0:
            text, self.pending = self.pending[:n], self.pending[n:]
            return [(text, None)]
        return []


def pieces(blocks, length, stops=()):
    """(text, finish_reason) pairs from the model's `blocks`, cut as Cutter cuts them."""
    cutter = Cutter(length, stops)
    yield from cutter.start()
    for block in blocks:
        if cutter.finished:
            return
        yield from cutter.feed(block)
        if cutter.finished:
            return


class ChoiceFailed(Exception):
    """Choice `index`'s sampler failed (`error`: its CharstreamError)."""

    def __init__(self, index, error):
        super().__init__(str(error))
        self.index, self.error = index, error


class Choices:
    """The generations of one request (its `n` choices), read together from their Streams: an async
    iterator of (index, text, finish_reason) pieces as the scheduler draws them. Closed, every
    generation leaves the batch; `stopping` (shutdown) ends it at its next piece."""

    POLL = 0.1   # seconds between looks at `stopping` while nothing comes

    def __init__(self, streams, inbox, length, stops, stopping):
        self.streams, self.inbox, self.stopping = streams, inbox, stopping
        self.cutters = [Cutter(length, stops) for _ in streams]
        self.closed = False

    async def __aiter__(self):
        live = []
        for i, cutter in enumerate(self.cutters):
            for text, finish in cutter.start():
                yield i, text, finish
            if not cutter.finished:
                live.append(i)
        while live and not self.closed and not self.stopping.is_set():
            self.inbox.event.clear()
            news = False
            for i in list(live):
                text, ended, error = self.streams[i].take()
                news = news or bool(text) or ended
                for piece, finish in self.cutters[i].feed(text) if text else ():
                    yield i, piece, finish
                if error is not None:
                    raise ChoiceFailed(i, error)
                if self.cutters[i].finished or ended:
                    live.remove(i)
                    self.streams[i].close()
            if not news and live:
                try:
                    await asyncio.wait_for(self.inbox.event.wait(), self.POLL)
                except asyncio.TimeoutError:
                    pass

    def close(self):
        self.closed = True
        for s in self.streams:
            s.close()


class Slots:
    """At most `limit` generations at once, counted; `stopping` tells running ones to end (shutdown)."""

    def __init__(self, limit):
        if limit < 1:
            raise ValueError(f"the limit must be at least 1, got {limit}")
        self.limit = limit
        self.active = 0        # generations holding a slot (used only on the event loop)
        self.produced = 0      # characters generated so far, all generations together
        self.stopping = threading.Event()

    def try_acquire(self, n=1):
        """Take n slots, if n are free."""
        if self.active + n > self.limit or self.stopping.is_set():
            return False
        self.active += n
        return True

    def release(self, n=1):
        self.active -= n


class Lease:
    """One request's hold on its `n` slots (one per choice), given back once (when its generations
    end, before its last bytes are sent, so that a client's next request finds them free), however
    often asked."""

    def __init__(self, slots, n=1):
        self.slots, self.n, self.held = slots, n, True

    def release(self):
        if self.held:
            self.held = False
            self.slots.release(self.n)
