"""The model: a vanilla character RNN's vocabulary, parameters, training state and generator."""
import itertools
import math
import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import samplers
from ._kernel import Kernel
from .errors import CharstreamWarning
from .vocab import DEFAULT_MAX_VOCAB, UNK, Vocab, check_max_size

PARAM_NAMES = ("Wxh", "Whh", "Why", "bh", "by")


@dataclass
class TrainState:
    """Everything the online trainer carries from one chunk, run or process to the next."""

    mem: dict                      # Adagrad memories, shaped like the parameters
    hprev: np.ndarray              # (H,) hidden state after the last trained chunk
    tail: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint32))  # untrained text, code points
    seq_length: int = 25           # T: inputs per chunk
    learning_rate: float = 0.1     # Adagrad step size
    chunks: int = 0                # chunks trained
    chars_seen: int = 0            # characters received, the tail included
    chars_trained: int = 0         # chunk inputs trained: the sum of each chunk's seq_length
    smooth_loss: float = math.nan  # min-char-rnn's 0.999/0.001 running loss per chunk, nan until one trains


class Model:
    """A character RNN: `h = tanh(Wxh x + Whh hprev + bh)`, `y = Why h + by`, softmax over `vocab`.

    `params` holds C-contiguous float64 arrays Wxh (H, V), Whh (H, H), Why (V, H), bh (H,), by (V,),
    the very arrays training updates. `seed` seeds the model's own generator, which draws the initial
    weights and the weights of characters that join the vocabulary later.

    The vocabulary grows from the stream up to `max_vocab` characters; past that, new characters map
    to UNK (U+FFFD), which takes the last slot. With `fixed_vocab=True` it never grows: characters
    outside it map to U+FFFD if the vocabulary holds it, else they are skipped with one warning.
    """

    def __init__(self, vocab, hidden_size=100, seed=None, max_vocab=DEFAULT_MAX_VOCAB, fixed_vocab=False):
        if isinstance(hidden_size, bool) or not isinstance(hidden_size, (int, np.integer)) or hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive integer, got {hidden_size!r}")
        chars = list(vocab)
        if len(set(chars)) != len(chars):
            raise ValueError("vocab must hold distinct characters")
        if any(isinstance(c, str) and len(c) == 1 and 0xD800 <= ord(c) <= 0xDFFF for c in chars):
            raise ValueError("vocab holds a lone surrogate (not a character of any UTF-8 text; "
                             "invalid bytes are read as U+FFFD)")
        self._vocab = Vocab(chars, max_vocab, fixed_vocab)
        self.rng = np.random.default_rng(seed)
        H, V = int(hidden_size), len(chars)
        self.params = {
            "Wxh": self.rng.standard_normal((H, V)) * 0.01,
            "Whh": self.rng.standard_normal((H, H)) * 0.01,
            "Why": self.rng.standard_normal((V, H)) * 0.01,
            "bh": np.zeros(H),
            "by": np.zeros(V),
        }
        self.state = TrainState(mem={k: np.zeros_like(v) for k, v in self.params.items()}, hprev=np.zeros(H))

    @property
    def vocab(self):
        """The characters in index order."""
        return tuple(self._vocab.itos)

    @property
    def max_vocab(self):
        """The most characters the vocabulary may hold, U+FFFD (the unknown symbol) included."""
        return self._vocab.max_size

    @max_vocab.setter
    def max_vocab(self, n):
        n = check_max_size(n)
        if n < self.vocab_size:
            raise ValueError(f"max_vocab={n} is below the model's {self.vocab_size} characters")
        if n > self._vocab.max_size:
            self._vocab.forget_unk_readings()
            self._warned_cap = False
        self._vocab.max_size = n

    @property
    def fixed_vocab(self):
        """True when the vocabulary never grows."""
        return self._vocab.fixed

    @fixed_vocab.setter
    def fixed_vocab(self, fixed):
        if self._vocab.fixed and not fixed:
            self._vocab.forget_unk_readings()
        self._vocab.fixed = bool(fixed)

    @property
    def hidden_size(self):
        return self.params["Whh"].shape[0]

    @property
    def vocab_size(self):
        return len(self._vocab)

    def __repr__(self):
        return f"Model(V={self.vocab_size}, H={self.hidden_size}, chunks={self.state.chunks})"

    def grow(self, chars):
        """Append unseen characters to the vocabulary in order; each gets a new column of Wxh, then a
        new row of Why, drawn `randn * 0.01` from the model's generator, and zero `by` and memories."""
        new = self._vocab.add(chars)
        if self._vocab.capped and not getattr(self, "_warned_cap", False):
            self._warned_cap = True
            warnings.warn(f"the vocabulary is full (max_vocab={self.max_vocab}): further new characters "
                          f"are read as {UNK!r} (U+FFFD)", CharstreamWarning, stacklevel=3)
        if not new:
            return new
        H, n = self.hidden_size, len(new)
        draws = np.empty((n, 2, H))
        for i in range(n):
            draws[i, 0] = self.rng.standard_normal(H) * 0.01   # Wxh column
            draws[i, 1] = self.rng.standard_normal(H) * 0.01   # Why row
        p, m = self.params, self.state.mem
        p["Wxh"] = np.ascontiguousarray(np.concatenate([p["Wxh"], draws[:, 0].T], axis=1))
        p["Why"] = np.concatenate([p["Why"], draws[:, 1]], axis=0)
        p["by"] = np.concatenate([p["by"], np.zeros(n)])
        m["Wxh"] = np.ascontiguousarray(np.concatenate([m["Wxh"], np.zeros((H, n))], axis=1))
        m["Why"] = np.concatenate([m["Why"], np.zeros((n, H))], axis=0)
        m["by"] = np.concatenate([m["by"], np.zeros(n)])
        return new

    def kernel(self, seq_length=None, train=False):
        """A compiled kernel over the current parameter arrays (rebuild it after `grow`)."""
        return Kernel(self.params, self.state.mem if train else None, seq_length or self.state.seq_length)

    def encode(self, text, what="text"):
        """int32 indices of the characters of `text` in the vocabulary; unknown ones are skipped
        with one CharstreamWarning naming them."""
        idx = self._vocab.encode(text)
        if (idx < 0).any():
            unknown = sorted({c for c in text if c not in self._vocab})
            shown = ", ".join(repr(c) for c in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
            warnings.warn(f"{what} has characters the model has never seen, skipped: {shown}",
                          CharstreamWarning, stacklevel=3)
            idx = idx[idx >= 0]
        return np.ascontiguousarray(idx, dtype=np.int32)

    def generate_blocks(self, seed="", temperature=1.0, random_seed=None, first_block=32, max_block=4096,
                        sampler=None, top_k=None, top_p=None):
        """Like `generate`, but yields the continuation as strings of growing length (cheaper to print)."""
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
                or not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        top_k, top_p = samplers.check_top_k(top_k), samplers.check_top_p(top_p)
        name, pick = samplers.resolve(sampler)
        if (pick is samplers.top_k_default and top_k is not None) or \
                (pick is samplers.top_p_default and top_p is not None):
            pick = samplers.temperature    # "top-k" with top_k=K is top-k with K: the cut, then a draw
        elif type(pick) is samplers.TopK and top_k is None and top_p is None:
            pick, top_k = samplers.temperature, pick.k     # TopK(k) is the same: the cut, then a draw
        if self.vocab_size == 0:
            raise ValueError("the model has an empty vocabulary: train it on some text first")
        kernel = self.kernel()
        h = np.zeros(self.hidden_size)
        kernel.step(self.encode(seed, "the seed"), h)
        rng = np.random.default_rng(random_seed)
        if top_p is None and (pick is samplers.temperature or (pick is samplers.greedy and top_k is None)):
            return _sample_blocks(self._vocab, kernel, h, float(temperature), rng, first_block, max_block,
                                  greedy=pick is samplers.greedy, top_k=top_k or 0)   # the compiled paths
        return samplers.pick_blocks(self._vocab, kernel, h, float(temperature), name, pick, top_k, top_p,
                                    rng, first_block, min(max_block, 256))

    def generate(self, seed="", temperature=1.0, random_seed=None, sampler=None, top_k=None, top_p=None):
        """An endless iterator of one-character strings: `seed` primes a fresh hidden state, then each
        step picks the next character from `softmax(y / temperature)` and yields it. The same
        `random_seed` gives the same text; the training state is not touched.

        `sampler` is a name (`"temperature"`, the default, `"greedy"`, `"top-k"`, `"top-p"` or a
        plugin's) or a callable `(probs, rng) -> int`; `top_k` / `top_p` cut probs to the k most
        probable characters / to the nucleus of mass p before it picks (see `charstream.samplers`).
        """
        blocks = self.generate_blocks(seed, temperature, random_seed, sampler=sampler, top_k=top_k, top_p=top_p)
        return itertools.chain.from_iterable(blocks)   # C-level: about 2% faster than a generator expression

    def evaluate(self, text):
        """Mean cross-entropy of `text` in nats/char, hidden state carried from a zero state, without
        training; characters outside the vocabulary are skipped (`charstream.scoring.score` also
        scores fresh-state windows)."""
        from .scoring import score
        result = score(self, [text], window=None)
        if result.predicted == 0:
            raise ValueError("evaluate needs at least two characters the model knows")
        return result.nats_per_char

    def save(self, path):
        """Write the model and its training state to one `.npz` file, atomically."""
        from .store import save
        save(self, path)


def _sample_blocks(vocab, kernel, h, temperature, rng, n, max_block, greedy=False, top_k=0):
    """Endless strings of n, 2n, 4n ... up to max_block sampled characters, h carried between them."""
    out = np.empty(max_block, dtype=np.int32)
    u = np.zeros(max_block)
    while True:
        if not greedy:       # greedy draws nothing, as samplers.greedy takes nothing from rng
            rng.random(out=u[:n])
        kernel.sample(h, u[:n], out[:n], temperature, greedy, top_k)
        yield vocab.decode(out[:n])
        n = min(2 * n, max_block)
