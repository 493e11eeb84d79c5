"""The online trainer: consecutive chunks of a text stream, trained as they arrive."""
import itertools
import math
import numbers
import os
import warnings
from dataclasses import dataclass

import numpy as np

from .errors import CharstreamWarning, NonFiniteError
from .store import MAX_LANES
from .vocab import codepoints, replace_surrogates


@dataclass(frozen=True)
class Record:
    """What one trained chunk reports."""

    chunk: int           # chunks trained so far, this one included
    chars: int           # characters trained so far as inputs (the sum of each chunk's seq_length)
    loss: float          # this chunk's summed cross-entropy in nats, computed before it trained
    smooth_loss: float   # min-char-rnn's smoothed loss: 0.999 * previous + 0.001 * loss
    vocab_size: int      # V after this chunk's characters joined
    seq_length: int      # T of this chunk


class Trainer:
    """Trains a Model online: chunk s has inputs text[s:s+T] and targets text[s+1:s+T+1], s += T.

    `seq_length` and `learning_rate` default to the values saved in the model's state (25 and 0.1
    for a new model). How the stream is split into strings changes nothing, to the bit; the untrained
    tail stays in `model.state.tail` and continues with the next text.

    `reset_every=N` zeroes the hidden state after each chunk that crosses a multiple of N trained
    characters (saved in the model; 0 turns it off, the default, min-char-rnn's way). It costs about
    0.02 nats/char from the trained state and makes zero-state starts as good (docs/quality.md).

    `lr_scale` (1 by default) multiplies the learning rate of every step from the next chunk on; it is
    not saved. `charstream.schedule.Anneal` sets it to anneal over a budget, as `train --anneal` does.

    `lanes=B` (saved in the model; a model keeps the lanes it was first trained with) trains B lanes
    at once: the stream is cut into rounds of B * `block` characters, lane b takes the b-th block of
    each round with its own hidden state, and each update averages the B lanes' gradients. A round's
    chunk s trains text[b * block + s * T ...] on every lane b, so a lane sees contiguous text within
    a block and carries its state from one round to the next; at most B * block characters wait in
    the tail before they train (DEFAULT_BLOCK for streams; a file of known size can take
    size / B: one block per lane per pass, as torch-rnn splits). Lanes=1 is the one-lane training
    above, to the bit. `threads` (default: the cores this process may use) changes no result.
    """

    def __init__(self, model, seq_length=None, learning_rate=None, reset_every=None, lanes=None, block=None,
                 threads=None):
        st = model.state
        T = st.seq_length if seq_length is None else seq_length
        lr = st.learning_rate if learning_rate is None else learning_rate
        R = st.reset_every if reset_every is None else reset_every
        if isinstance(R, bool) or not isinstance(R, (int, np.integer)) or R < 0:
            raise ValueError(f"reset_every must be a whole number of characters (0: never), got {R!r}")
        if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
            raise ValueError(f"seq_length must be a positive integer, got {T!r}")
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"learning_rate must be a positive number, got {lr!r}")
        B = st.lanes if lanes is None else lanes
        if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or not 1 <= B <= MAX_LANES:
            raise ValueError(f"lanes must be an integer from 1 to {MAX_LANES}, got {B!r}")
        started = st.chunks > 0 or (st.lanes > 1 and len(st.tail) > 0)
        if int(B) != st.lanes and started:
            raise ValueError(f"the model was trained with {st.lanes} lane{'s' if st.lanes > 1 else ''}; "
                             f"lanes change what each update sees: train {B} lanes in a new model")
        if B > 1 and st.round_step and int(T) != st.seq_length:
            raise ValueError(f"the model is {st.round_step} chunks into a round of its lanes at seq_length "
                             f"{st.seq_length}: keep it, or start a new model")
        self.threads = default_threads() if threads is None else check_threads(threads)
        self.model = model
        self.lr_scale = 1.0   # multiplies the learning rate of each step (charstream.schedule anneals it)
        if int(T) != st.seq_length and not math.isnan(st.smooth_loss):
            st.smooth_loss *= int(T) / st.seq_length   # it is per chunk: keep its nats/char
        st.seq_length, st.learning_rate, st.reset_every = int(T), float(lr), int(R)
        st.lanes = int(B)
        if B > 1:
            if not st.block or not started:
                D = DEFAULT_BLOCK if block is None else block
                if isinstance(D, bool) or not isinstance(D, (int, np.integer)) or D < 1:
                    raise ValueError(f"block must be a positive number of characters, got {D!r}")
                st.block = max(int(T), int(D) // int(T) * int(T))
            if st.hlanes is None or st.hlanes.shape[0] != B:
                st.hlanes = np.repeat(st.hprev[None, :], B, axis=0)

    @property
    def seq_length(self):
        return self.model.state.seq_length

    @property
    def learning_rate(self):
        return self.model.state.learning_rate

    def train(self, texts):
        """Train on an iterable of str as it arrives; yield a Record as soon as each chunk trains.

        Stopping the iteration early keeps everything not yet trained in the tail. When the iterable
        ends, the tail's new characters join the vocabulary. Characters a closed vocabulary (fixed,
        or full, without U+FFFD) cannot encode are dropped as they arrive, with one warning.
        """
        if self.model.state.lanes > 1:
            yield from self._train_lanes(texts)
            return
        model, st = self.model, self.model.state
        T = st.seq_length
        drop = _Dropper(model)
        cps = drop(st.tail)          # code points from the first untrained input on
        s = 0                        # start of the next chunk in cps
        kernel = None                # built once; again only when the vocabulary grows
        try:
            for text in itertools.chain([""], texts):   # "": first train what the tail holds
                if not isinstance(text, str):
                    raise TypeError(f"train() takes an iterable of str, got {type(text).__name__}")
                if text:
                    cps = np.concatenate([cps[s:], drop(self._decoded(codepoints(text)))])
                    s = 0
                    st.tail = cps            # the state is whole whenever the trainer waits for text
                    st.chars_seen += len(text)
                if len(cps) - s < T + 1:
                    continue
                idx = model.vocabulary.lookup(cps)
                unknown = _first_unknown(idx, s)
                while s + T + 1 <= len(cps):
                    if unknown < s + T + 1:
                        model.grow(_unknown_chars(model, cps[s:s + T + 1]))
                        bad = s + np.flatnonzero(idx[s:] < 0)   # only the unknown ones can change
                        idx[bad] = model.vocabulary.lookup(cps[bad])
                        unknown = _first_unknown(idx, s)
                        kernel = None
                    if kernel is None:   # one lane at float64 with dropout: one thread (a team only waits at B=1)
                        threads = 1 if model.dtype == "float64" else self.threads
                        kernel = model.kernel(T, train=True, threads=threads)
                    if model.dropout:
                        kernel.dropout_step = st.chunks   # the masks of update st.chunks (ext/lanes_ops.h)
                    loss = kernel.train_chunk(idx, s, st.hprev, st.learning_rate * self.lr_scale)
                    if not math.isfinite(loss):
                        raise NonFiniteError(f"the loss became {loss} at chunk {st.chunks + 1}: "
                                             f"training stopped, the model was not updated")
                    s += T
                    st.tail = cps[s:]        # a consistent state at every yield, for checkpoints
                    st.chunks += 1
                    st.chars_trained += T
                    R = st.reset_every
                    if R and st.chars_trained // R != (st.chars_trained - T) // R:
                        st.hprev[:] = 0.0    # before the record: a checkpoint holds the state the next chunk reads
                    st.smooth_loss = (loss if math.isnan(st.smooth_loss)
                                      else 0.999 * st.smooth_loss + 0.001 * loss)
                    model.history.add(st.chars_trained, loss, T)   # the training curve (charstream.history)
                    yield Record(st.chunks, st.chars_trained, loss, st.smooth_loss, model.vocab_size, T)
        finally:
            st.tail = np.ascontiguousarray(cps[s:], dtype=np.uint32)
        model.grow(_unknown_chars(model, st.tail))

    def _train_lanes(self, texts):
        """`train` with B > 1 lanes: the rounds of the class docstring; the tail starts the round."""
        model, st = self.model, self.model.state
        B, T, D = st.lanes, st.seq_length, st.block
        drop = _Dropper(model)
        cps = drop(st.tail)
        xs = np.empty((B, T + 1), dtype=np.int32)
        span = np.arange(B)[:, None] * D + np.arange(T + 1)[None, :]   # (B, T+1): chunk 0 of each lane
        kernel = None
        try:
            for text in itertools.chain([""], texts):
                if not isinstance(text, str):
                    raise TypeError(f"train() takes an iterable of str, got {type(text).__name__}")
                if text:
                    cps = np.concatenate([cps, drop(self._decoded(codepoints(text)))])
                    st.tail = cps
                    st.chars_seen += len(text)
                while len(cps) >= (B - 1) * D + st.round_step * T + T + 1:
                    chunk = cps[span + st.round_step * T]
                    idx = model.vocabulary.lookup(chunk.reshape(-1))
                    if (idx < 0).any():
                        model.grow(_unknown_chars(model, chunk.reshape(-1)))
                        idx = model.vocabulary.lookup(chunk.reshape(-1))
                        kernel = None
                    xs[:] = idx.reshape(B, T + 1)
                    if kernel is None:
                        kernel = model.kernel(T, train=True, lanes=B, threads=self.threads)
                    if model.dropout:
                        kernel.dropout_step = st.chunks
                    loss = kernel.train_chunk(xs, 0, st.hlanes, st.learning_rate * self.lr_scale) / B
                    if not math.isfinite(loss):
                        raise NonFiniteError(f"the loss became {loss} at chunk {st.chunks + 1}: "
                                             f"training stopped, the model was not updated")
                    model.history.add(st.chars_trained + B * T, loss * B, B * T)   # the training curve
                    st.round_step += 1
                    if st.round_step * T >= D:     # the round is trained: the next starts B * D on
                        cps = cps[B * D:]
                        st.round_step = 0
                    st.tail = cps
                    st.chunks += 1
                    st.chars_trained += B * T
                    R = st.reset_every
                    if R and st.chars_trained // R != (st.chars_trained - B * T) // R:
                        st.hlanes[:] = 0.0
                    st.hprev[:] = st.hlanes[B - 1]    # generation and scoring start from the last lane's state
                    st.smooth_loss = (loss if math.isnan(st.smooth_loss)
                                      else 0.999 * st.smooth_loss + 0.001 * loss)
                    yield Record(st.chunks, st.chars_trained, loss, st.smooth_loss, model.vocab_size, T)
        finally:
            st.tail = np.ascontiguousarray(cps, dtype=np.uint32)
        model.grow(_unknown_chars(model, st.tail))

    def _decoded(self, cps):
        """Lone surrogates (undecodable bytes smuggled in by errors="surrogateescape") become
        U+FFFD, as invalid UTF-8 does in the byte sources; warned once per trainer."""
        if replace_surrogates(cps) and not getattr(self, "_warned_surrogates", False):
            self._warned_surrogates = True
            warnings.warn("the text has lone surrogates (bytes that were not UTF-8, decoded with "
                          "errors='surrogateescape'?): read as U+FFFD", CharstreamWarning, stacklevel=4)
        return cps

    def sample(self, length=200, prompt="", temperature=1.0, random_seed=None, fresh_state=False, *, seed=None):
        """A sample of `length` characters from the live model, drawn from a copy of its hidden state
        (zeros with `fresh_state`) with its own random generator: it does not disturb training (call
        it between records)."""
        if self.model.vocab_size == 0:
            return ""
        chars = self.model.generate(prompt, temperature, random_seed, fresh_state=fresh_state, seed=seed)
        return "".join(itertools.islice(chars, length))


DEFAULT_BLOCK = 4096   # characters a lane takes of each round of a stream (rounded down to seq_length)


def default_threads():
    """The cores this process may run on (os.sched_getaffinity where there is one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def check_threads(n):
    """n if it is a usable thread count, else ValueError; more threads than cores is clamped with a warning."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    cores = default_threads()
    if n > cores:
        warnings.warn(f"threads={n} is more than the {cores} cores this process may use: using {cores}",
                      CharstreamWarning, stacklevel=3)
        return cores
    return int(n)


class _Dropper:
    """Drops the code points a closed vocabulary can never encode (its mapping no longer changes, so
    this depends on the text alone), warning once per run."""

    def __init__(self, model):
        self.vocab, self.warned = model.vocabulary, False

    def __call__(self, cps):
        if not self.vocab.closed:
            return cps
        keep = self.vocab.lookup(cps) >= 0
        if keep.all():
            return cps
        if not self.warned:
            self.warned = True
            bad = sorted({chr(c) for c in np.asarray(cps)[~keep]})
            shown = ", ".join(repr(c) for c in bad[:10]) + (", ..." if len(bad) > 10 else "")
            which = "fixed vocabulary" if self.vocab.fixed else "full vocabulary (it has no U+FFFD)"
            warnings.warn(f"characters outside the {which} are skipped: {shown}", CharstreamWarning, stacklevel=3)
        return cps[keep]


def _first_unknown(idx, start):
    """Position of the first -1 in idx[start:], or len(idx) when there is none."""
    hits = np.flatnonzero(idx[start:] < 0)
    return start + int(hits[0]) if len(hits) else len(idx)


def _unknown_chars(model, cps):
    """The characters of cps not in the model's vocabulary, in first-seen order."""
    idx = model.vocabulary.lookup(cps)
    new = np.asarray(cps)[idx < 0]
    _, first = np.unique(new, return_index=True)
    return [chr(c) for c in new[np.sort(first)]]
