"""The online trainer: consecutive chunks of a text stream, trained as they arrive."""
import itertools
import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np

from .errors import CharstreamWarning, NonFiniteError
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
    """

    def __init__(self, model, seq_length=None, learning_rate=None, reset_every=None):
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
        self.model = model
        self.lr_scale = 1.0   # multiplies the learning rate of each step (charstream.schedule anneals it)
        if int(T) != st.seq_length and not math.isnan(st.smooth_loss):
            st.smooth_loss *= int(T) / st.seq_length   # it is per chunk: keep its nats/char
        st.seq_length, st.learning_rate, st.reset_every = int(T), float(lr), int(R)

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
                    if kernel is None:
                        kernel = model.kernel(T, train=True)
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
