"""Batched generation: several sequences of one model sampled together, each exactly as `Model.generate` alone.

A `Batch` holds lanes (one per sequence: its state, random generator, sampler, prompt and length) and
advances them in rounds: each round draws the same number of characters on every ready lane, the
compiled ones in one `LaneKernel.sample_lanes` call (one read of the weights serves every lane), the
ones whose sampler runs in Python one character at a time. A lane may join or leave between rounds.

Why a lane's text does not depend on the batch: every product of LaneKernel is tiled so that row b of
the result (lane b) is summed in the same order whatever the number of rows and b's place among them
(docs/kernel.md), the uniforms of a lane come from its own generator in the order it uses them
(`rng.random(n)` twice draws what `rng.random(2n)` draws once), and `Model.generate` itself is a batch
of one. For float64 one-layer rnn models generation runs on `Kernel` (min-char-rnn's own kernel,
faster for one sequence), lane after lane, so the same holds there.
"""
import operator
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from . import samplers
from .errors import CharstreamError
from .trainer import default_threads as cores

PYTHON_BLOCK = 256     # the most characters a round draws when a lane's sampler runs in Python

_pool, _pool_lock = None, threading.Lock()   # the threads that share out a round's turns on `Kernel`


def _shared_pool():
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(1, cores() - 1), thread_name_prefix="charstream-turns")
        return _pool


@dataclass(frozen=True)
class Request:
    """One sequence to generate: the arguments of `Model.generate`."""

    prompt: str = ""
    temperature: float = 1.0
    random_seed: Optional[int] = None
    sampler: Any = None           # a name, a callable (probs, rng) -> int, or None (temperature)
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    fresh_state: bool = False
    length: Optional[int] = None  # characters after the prompt; None: no end


def as_request(r):
    """A Request from a Request, a dict of `Model.generate`'s keyword arguments, or a prompt string."""
    if isinstance(r, Request):
        return r
    if isinstance(r, str):
        return Request(prompt=r)
    if isinstance(r, dict):
        try:
            return Request(**r)
        except TypeError as e:
            raise TypeError(f"a request takes generate's keyword arguments: {e}") from None
    raise TypeError(f"a request must be a dict of generate's arguments, a Request or a prompt, got {r!r}")


class Lane:
    """One sequence of a batch: state h (S,), its generator, how it picks, its prompt and what is left."""

    def __init__(self, index, h, prompt, rng, temperature, name, pick, top_k, top_p, compiled, length, block):
        self.index = index
        self.h = h                          # (S,) the lane's hidden state, in the model's dtype
        self.prompt = prompt                # (m,) int32: prompt characters not yet read
        self.rng = rng
        self.temperature = temperature
        self.name, self.pick, self.top_k, self.top_p = name, pick, top_k, top_p   # the Python sampler
        self.compiled = compiled is not None
        self.greedy, self.k = compiled if compiled is not None else (False, 0)   # the kernel's draw
        self.left = length                  # characters still to draw; None: no end
        self.block = block                  # the most this lane takes in its next round
        self.error = None                   # the CharstreamError its sampler raised, if any

    @property
    def done(self):
        return self.left == 0 or self.error is not None

    @property
    def ready(self):
        """Its prompt is read and it has characters to draw."""
        return len(self.prompt) == 0 and not self.done


def prepare(model, request, index=0, first_block=32):
    """A Lane for `request` on `model`, every argument checked as `Model.generate` checks it
    (ValueError, TypeError, CharstreamError for a bad sampler name); its prompt is not read yet."""
    r = as_request(request)
    temperature = samplers.check_temperature(r.temperature)
    top_k, top_p = samplers.check_top_k(r.top_k), samplers.check_top_p(r.top_p)
    length = samplers.check_length(r.length)
    name, pick = samplers.resolve(r.sampler)
    pick, top_k, top_p = samplers.with_cuts(pick, top_k, top_p)
    if model.vocab_size == 0:
        raise ValueError("the model has an empty vocabulary: train it on some text first")
    prompt = model.encode(r.prompt, "the prompt")
    h = model.start_state(r.fresh_state)
    return Lane(index, h, prompt, np.random.default_rng(r.random_seed), temperature, name, pick, top_k, top_p,
                samplers.compiled_path(pick, top_k, top_p), length, first_block)


class Batch:
    """Lanes of one model generated together on one kernel (`Model.generation_kernel`), `lanes` at most
    in a round; blocks start at `first_block` characters per lane and grow `grow` times (doubling by
    default) up to `max_block`.

    On `Kernel` (float64 one-layer rnn), where lanes take turns, a round's turns are shared out over
    `workers` threads (default: the cores this process may use, at most `lanes`), each with its own
    Kernel: the kernel runs without the GIL, and a lane's text does not depend on which one drew it."""

    def __init__(self, model, lanes=1, threads=1, first_block=32, max_block=4096, workers=None, grow=2):
        if first_block < 1 or max_block < first_block:
            raise ValueError(f"need 1 <= first_block <= max_block, got {first_block}, {max_block}")
        if grow < 1:
            raise ValueError(f"need grow >= 1, got {grow}")
        self.model, self.vocab = model, model.vocabulary
        self.kernel = model.generation_kernel(lanes, threads)
        self.kernels = [self.kernel]     # on Kernel: one per worker thread
        if not hasattr(self.kernel, "sample_lanes"):
            n = max(1, min(lanes, cores() if workers is None else workers))
            self.kernels += [model.generation_kernel(1, 1) for _ in range(n - 1)]
        self.capacity = lanes
        self.first_block, self.max_block, self.grow = first_block, max_block, grow
        self.lanes = []              # in the order they joined
        self._turn = 0               # where the next round starts when more lanes are ready than fit

    def add(self, lane):
        self.lanes.append(lane)
        return lane

    def remove(self, lane):
        if lane in self.lanes:
            self.lanes.remove(lane)

    def prime(self, budget=None):
        """Read up to `budget` characters (None: all) of each waiting lane's prompt into its state."""
        for lane in self.lanes:
            if len(lane.prompt):
                n = len(lane.prompt) if budget is None else min(budget, len(lane.prompt))
                self.kernel.step(np.ascontiguousarray(lane.prompt[:n]), lane.h)
                lane.prompt = lane.prompt[n:]

    def round(self, limit=None, skip=()):
        """Draw the same number of characters on every ready lane (at most `capacity` of them, taking
        turns, and not those in `skip`): the fewest any of them may take (its block, what is left of
        it, `limit`). Returns [(lane, text)]; a lane whose sampler failed gets the text before the
        failure and its `error` set. Lanes that are done leave the batch."""
        ready = [lane for lane in self.lanes if lane.ready and lane not in skip]
        if len(ready) > self.capacity:
            t = self._turn % len(ready)
            ready = (ready[t:] + ready[:t])[:self.capacity]
            self._turn += self.capacity
        if not ready:
            self.lanes = [lane for lane in self.lanes if not lane.done]
            return []
        n = min(lane.block if lane.compiled else min(lane.block, PYTHON_BLOCK) for lane in ready)
        n = min([n] + [lane.left for lane in ready if lane.left is not None] + ([limit] if limit else []))
        compiled = [lane for lane in ready if lane.compiled]
        out = self._sample(compiled, n) if compiled else []
        out += [(lane, self._pick(lane, n)) for lane in ready if not lane.compiled]
        for lane, text in out:
            if lane.left is not None:
                lane.left -= len(text)
            lane.block = min(self.grow * lane.block, self.max_block)
        self.lanes = [lane for lane in self.lanes if not lane.done]
        return out

    def _sample(self, lanes, n):
        """n characters on each compiled lane: `kernel.sample`'s draws, all lanes in one call."""
        B = len(lanes)
        hs = np.stack([lane.h for lane in lanes])                 # (B, S)
        u = np.zeros((B, n))
        for b, lane in enumerate(lanes):
            if not lane.greedy:      # greedy draws nothing, as samplers.greedy takes nothing from rng
                lane.rng.random(out=u[b])
        out = np.empty((B, n), dtype=np.int32)
        if not hasattr(self.kernel, "sample_lanes"):   # Kernel: one sequence at a time (the module's docstring)
            self._turns(lanes, hs, u, out)
        else:
            self.kernel.sample_lanes(hs, u, out, [1.0 / lane.temperature for lane in lanes],
                                     [lane.greedy for lane in lanes], [lane.k for lane in lanes])
        for b, lane in enumerate(lanes):
            lane.h[...] = hs[b]
        return [(lane, self.vocab.decode(out[b])) for b, lane in enumerate(lanes)]

    def _turns(self, lanes, hs, u, out):
        """Each lane's turn on a Kernel: lanes b = w, w + W, w + 2W, ... on kernel w of W."""
        W = min(len(self.kernels), len(lanes))

        def run(w):
            kernel = self.kernels[w]
            for b in range(w, len(lanes), W):
                lane = lanes[b]
                kernel.sample(hs[b], u[b], out[b], lane.temperature, lane.greedy, lane.k)

        others = [_shared_pool().submit(run, w) for w in range(1, W)]
        run(0)
        for f in others:
            f.result()

    def _pick(self, lane, n):
        """n characters of a lane whose sampler runs in Python: softmax(y / T), cut to top_k then
        top_p, handed to the sampler; h stepped through each pick (as samplers.pick_blocks)."""
        V = len(self.vocab)
        p = np.empty(V)
        x = np.empty(1, dtype=np.int32)
        out = np.empty(n, dtype=np.int32)
        for i in range(n):
            self.kernel.probs(lane.h, p, lane.temperature)
            if lane.top_k is not None:
                samplers.cut_top_k(p, lane.top_k)
            if lane.top_p is not None:
                samplers.cut_top_p(p, lane.top_p)
            try:
                k = _pick_index(lane.pick, p, lane.rng, lane.name, V)
            except CharstreamError as e:
                lane.error = e
                return self.vocab.decode(out[:i])
            out[i] = x[0] = k
            self.kernel.step(x, lane.h)
        return self.vocab.decode(out)


def _pick_index(pick, p, rng, name, V):
    """pick(p, rng) as an index in [0, V); CharstreamError naming the sampler if it fails or answers
    anything else."""
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
    return k


def blocks(batch, lane):
    """The text of one lane, block by block, the batch holding it alone (Model.generate_blocks); a
    sampler's failure raises its CharstreamError instead of the block it broke."""
    while not lane.done:
        for _, text in batch.round():
            if lane.error is not None:
                raise lane.error
            yield text


def generate_many(model, requests, threads=1, first_block=32, max_block=4096):
    """(index, text) pieces of every request's continuation as they are drawn (see Model.generate_many)."""
    requests = list(requests)
    lanes = [prepare(model, r, i, first_block) for i, r in enumerate(requests)]
    batch = Batch(model, max(1, len(lanes)), threads, first_block, max_block)
    for lane in lanes:
        batch.add(lane)
    batch.prime()
    return _pieces(batch)


def _pieces(batch):
    while batch.lanes:
        for lane, text in batch.round():
            if lane.error is not None:
                raise lane.error
            if text:
                yield lane.index, text
