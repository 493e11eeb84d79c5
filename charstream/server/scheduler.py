"""Continuous batching: one thread per model steps every running generation of it together.

A Scheduler owns a `charstream.batching.Batch` over one kernel, built once for its model. Requests
hand it lanes (`submit`); its thread adds them at the next round, reads their prompts a budget at a
time, draws a round for every ready lane, and puts each lane's text on its Stream, which the event
loop reads. A lane leaves when it is done or its Stream is closed (the client left, a stop sequence
came). A round lasts about ROUND_SECONDS, so a new request waits about that long to join. A reloaded
model gets a new Scheduler; the old one finishes the lanes it has, then its thread ends.
"""
import asyncio
import collections
import logging
import threading
import time

from ..batching import Batch

ROUND_SECONDS = 0.01   # the time a round aims at: a request joins the batch within about this
MAX_BLOCK = 4096       # the most characters a lane draws in one round
PENDING = 1 << 16      # characters a Stream may hold unread before its lane waits for the reader
TIMED_CHARS = 256      # a round of fewer lane-characters can only lower the time per character: its
                       # fixed cost (about 0.1 ms) made a newcomer's one-character round read as 100
                       # times the time per character, and the rounds after it 100 times too short
IDLE_SECONDS = 2.0     # the thread waits this long for a new lane before it ends (starting one for every
                       # request held the event loop until the new thread first ran)
FLUSH_SECONDS = 0.1    # a Stream wakes its reader at least this often while text comes ...
# ... and whenever its unannounced text reaches `flush_at` characters, which starts at 1 (the first
# character goes out at once) and doubles up to MAX_BLOCK. Waking the reader for every round's text
# made the event loop write 32 pieces per 10 ms round at 32 clients: 0.55x one client's chars/s for
# the rnn of H=100, against 1.29x when each request had its own thread and blocks of up to 4,096.

log = logging.getLogger("charstream.server")


class Inbox:
    """Wakes the coroutine of one request on its event loop when any of its Streams has news."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def notify(self):   # from the scheduler's thread
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:   # the loop is closed: nobody is reading any more
            pass


class Stream:
    """One generation's text as the scheduler draws it: put and ended on its thread, taken on the loop."""

    def __init__(self, lane, inbox, scheduler):
        self.lane, self.inbox, self.scheduler = lane, inbox, scheduler
        self._lock = threading.Lock()
        self._texts = collections.deque()
        self.pending = 0            # characters put and not taken
        self.ended = False          # no more text will come
        self.error = None           # why, when a sampler failed (a CharstreamError)
        self.closed = False         # the reader wants no more: the lane leaves at the next round
        self._quiet = 0             # characters put since the reader was last woken
        self._flush_at = 1          # ... that wake it (doubling up to MAX_BLOCK)
        self._woken = 0.0           # when it was last woken (time.monotonic)
        self._take_at = 1           # the most characters of whole rounds' texts a take joins

    def put(self, text):
        now = time.monotonic()
        with self._lock:
            self._texts.append(text)
            self.pending += len(text)
            self._quiet += len(text)
            wake = self._quiet >= self._flush_at or now - self._woken >= FLUSH_SECONDS
            if wake:
                self._quiet, self._woken = 0, now
                self._flush_at = min(2 * self._flush_at, MAX_BLOCK)
        if wake:
            self.inbox.notify()

    def end(self, error=None):
        with self._lock:
            self.ended, self.error = True, error
        self.inbox.notify()

    def take(self):
        """(text, ended, error): the oldest text put and not taken ("" if none): whole rounds' texts,
        joined while they come to fewer than `_take_at` characters (1 at first, doubling up to MAX_BLOCK
        at each take, so a stream's pieces grow as `generate_blocks`' do); ended once all is taken."""
        with self._lock:
            parts, size = [], 0
            while self._texts and (not parts or size + len(self._texts[0]) <= self._take_at):
                parts.append(self._texts.popleft())
                size += len(parts[-1])
            self._take_at = min(2 * self._take_at, MAX_BLOCK)
            text = "".join(parts)
            full = self.pending > PENDING
            self.pending -= len(text)
            full = full and self.pending <= PENDING
            ended, error = self.ended and not self._texts, self.error if not self._texts else None
        if full:
            self.scheduler.wake()   # its lane was waiting for this reader
        return text, ended, error

    def close(self):
        if not self.closed:
            self.closed = True
            self.scheduler.wake()


class Scheduler:
    """The generations of one model, stepped together by one thread on one kernel of `lanes` lanes."""

    def __init__(self, model, lanes, threads=1, round_seconds=ROUND_SECONDS):
        self.model = model
        # A lane's first round draws one character (it leaves at once), its next ones what the budget
        # allows: a round draws as many characters on every lane as the smallest block among them, and
        # blocks doubling from 1 made every newcomer hold the batch to rounds of 1, 2, 4 ... characters
        # (one client's 4,000-character request took 12 rounds, 2-4 ms more than model.generate's 8).
        self.batch = Batch(model, lanes, threads, first_block=1, max_block=MAX_BLOCK, grow=MAX_BLOCK)
        self.round_seconds = round_seconds
        self._cond = threading.Condition()
        self._joining, self._streams = [], {}     # Streams to add; lane -> Stream of the lanes in the batch
        self._thread = None
        self._idle_since = None                   # when the thread last found nothing to run
        self.step_seconds = None                  # a round's seconds per character of one lane, recently
        self.rounds = 0

    @property
    def running(self):
        """Lanes in the batch or about to join it."""
        with self._cond:
            return len(self._streams) + len(self._joining)

    def submit(self, lane, inbox):
        """A Stream of the lane's text; the lane joins at the next round (the thread starts if idle)."""
        stream = Stream(lane, inbox, self)
        with self._cond:
            self._joining.append(stream)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="charstream-scheduler", daemon=True)
                self._thread.start()
            self._cond.notify()
        return stream

    def wake(self):
        with self._cond:
            self._cond.notify()

    def _budget(self, lanes):
        """Characters per lane that make a round of about round_seconds on `lanes` lanes. The time is
        taken as linear in the lanes (batched products grow slower, so rounds come out shorter, never
        longer): timed per round instead, a round after the batch grew from a few lanes to 32 lasted
        up to 32 rounds' time, and 1% of first characters under load waited 0.45-0.54 s."""
        if self.step_seconds is None:
            return 1
        return max(1, min(MAX_BLOCK, int(self.round_seconds / max(self.step_seconds * max(1, lanes), 1e-9))))

    def _run(self):
        try:
            while self._step():
                pass
        except BaseException as e:   # a bug: every reader hears of it instead of waiting forever
            log.error("the scheduler failed", exc_info=e)
            with self._cond:
                streams = list(self._streams.values()) + self._joining
                self._streams, self._joining, self._thread = {}, [], None
                self.batch.lanes = []
            for s in streams:
                s.end(RuntimeError("the scheduler failed"))

    def _step(self):
        """One round; False when there is nothing left to run (the thread then ends)."""
        batch = self.batch
        with self._cond:
            for s in self._joining:
                batch.add(s.lane)
                self._streams[s.lane] = s
            self._joining = []
            for lane, s in list(self._streams.items()):
                if s.closed:
                    batch.remove(lane)
                    del self._streams[lane]
            waiting = {lane for lane, s in self._streams.items() if s.pending > PENDING}
            if not any(len(lane.prompt) or (lane.ready and lane not in waiting) for lane in batch.lanes):
                self._end_finished()
                if not self._streams:
                    if self._idle_since is None:
                        self._idle_since = time.monotonic()
                    elif time.monotonic() - self._idle_since >= IDLE_SECONDS:
                        self._thread = None
                        return False
                    self._cond.wait(IDLE_SECONDS)
                    return True
                self._cond.wait()
                return True
            self._idle_since = None
        t = time.perf_counter()
        budget = self._budget(sum(1 for lane in batch.lanes if lane.ready and lane not in waiting))
        batch.prime(budget)
        results = batch.round(limit=budget, skip=waiting)
        n = max((len(text) for _, text in results), default=0) * len(results)
        if n:
            per = (time.perf_counter() - t) / n
            if self.step_seconds is None or per < self.step_seconds:
                self.step_seconds = per
            elif n >= TIMED_CHARS:
                self.step_seconds = 0.7 * self.step_seconds + 0.3 * per
        self.rounds += 1
        for lane, text in results:
            s = self._streams.get(lane)
            if s is not None and text:
                s.put(text)
        with self._cond:
            self._end_finished()
        return True

    def _end_finished(self):
        """End the Streams of lanes the batch no longer holds (done, or their sampler failed)."""
        held = set(map(id, self.batch.lanes))
        for lane, s in list(self._streams.items()):
            if id(lane) not in held:
                del self._streams[lane]
                s.end(lane.error)


class Schedulers:
    """The Scheduler of the model in service (built on first use, once per model: a reload makes a
    new one, while generations on the old one finish there)."""

    def __init__(self, lanes, threads=1):
        self.lanes, self.threads = lanes, threads
        self._lock = threading.Lock()
        self.current = None
        self.built = 0    # kernels built so far

    def has(self, model):
        """Whether the Scheduler of `model` is built (for_model then builds nothing)."""
        current = self.current
        return current is not None and current.model is model

    def for_model(self, model):
        with self._lock:
            if not self.has(model):
                self.current = Scheduler(model, self.lanes, self.threads)
                self.built += 1
            return self.current
