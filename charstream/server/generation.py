"""Generations as the server runs them: text in pieces, cut at the length and the stop sequences, bounded in number."""
import threading


def pieces(blocks, length, stops=()):
    """(text, finish_reason) pairs from the model's `blocks`: at most `length` characters in all (None:
    no end), cut before the first stop sequence. finish_reason is None until the last pair, which
    says "stop" or "length". Text that may begin a stop sequence is held back until it cannot."""
    if length == 0:
        yield "", "length"
        return
    hold = max(map(len, stops), default=1) - 1
    pending, left = "", length
    for block in blocks:
        if left is not None:
            block = block[:left]
            left -= len(block)
        pending += block
        cut = min((i for i in (pending.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            yield pending[:cut], "stop"
            return
        if left == 0:
            yield pending, "length"
            return
        n = len(pending) - hold
        if n > 0:
            yield pending[:n], None
            pending = pending[n:]


class Slots:
    """At most `limit` generations at once, counted; `stopping` tells running ones to end (shutdown)."""

    def __init__(self, limit):
        if limit < 1:
            raise ValueError(f"the limit must be at least 1, got {limit}")
        self.limit = limit
        self.active = 0        # generations holding a slot (used only on the event loop)
        self.produced = 0      # characters generated so far, all generations together
        self.stopping = threading.Event()

    def try_acquire(self):
        if self.active >= self.limit or self.stopping.is_set():
            return False
        self.active += 1
        return True

    def release(self):
        self.active -= 1


class Lease:
    """One generation's hold on a slot, given back once (when the generation ends, before its last
    bytes are sent, so that a client's next request finds the slot free), however often asked."""

    def __init__(self, slots):
        self.slots, self.held = slots, True

    def release(self):
        if self.held:
            self.held = False
            self.slots.release()
