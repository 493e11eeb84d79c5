"""The model: a character-level RNN, GRU or LSTM (stacked or not): its vocabulary, parameters, training state, curve and generator."""
import itertools
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import batching, cells, store
from .history import History
from .validation import without_final
from .scoring import score, score_adaptive
from ._kernel import CellKernel, Kernel, LaneKernel
from .errors import CharstreamWarning, ModelFileError
from .vocab import DEFAULT_MAX_VOCAB, UNK, Vocab, check_max_size, codepoints, to_text


@dataclass
class TrainState:
    """Everything the online trainer carries from one chunk, run or process to the next."""

    mem: dict                      # Adagrad memories (Adam: first moments), shaped like the parameters
    hprev: np.ndarray              # (state_size,) hidden state after the last trained chunk: (H,) for the rnn
    tail: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint32))  # untrained text, code points
    seq_length: int = 25           # T: inputs per chunk
    learning_rate: float = 0.1     # the optimizer's step size
    chunks: int = 0                # chunks trained
    chars_seen: int = 0            # characters received, the tail included
    chars_trained: int = 0         # chunk inputs trained: the sum of each chunk's seq_length
    smooth_loss: float = math.nan  # min-char-rnn's 0.999/0.001 running loss per chunk, nan until one trains
    reset_every: int = 0           # hprev is zeroed after each chunk that crosses a multiple of this many
                                   # trained characters (0: never, min-char-rnn's way within a pass)
    moments: dict = field(default_factory=dict)   # Adam's second moments, shaped like the parameters
    steps: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))  # Adam steps taken
    lanes: int = 1                 # B: stretches of the stream trained side by side (charstream.trainer)
    block: int = 0                 # D: characters a lane takes of each round of B * D (0: not yet set)
    round_step: int = 0            # chunks each lane has trained of the current round (tail starts the round)
    hlanes: np.ndarray = None      # (lanes, state_size) each lane's state, with lanes > 1 (hprev: the last lane's)


DTYPES = ("float64", "float32")


def check_dtype(dtype):
    """The name of a model dtype charstream computes in ("float64" or "float32"), else ValueError."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    return name


class Model:
    """A character-level model of `cell` ("rnn": min-char-rnn's `h = tanh(Wxh x + Whh hprev + bh)`,
    "gru" or "lstm"), `layers` deep, `y = Why h + by`, softmax over `vocab` (charstream.cells has each
    cell's table of parameters and shapes).

    `params` holds the C-contiguous arrays training updates: for one rnn layer Wxh (H, V), Whh (H, H),
    Why (V, H), bh (H,), by (V,) (charstream.cells has every cell's table), all of `dtype`: float64
    (the default, min-char-rnn's) or float32 (half the bytes, twice the vector width). `random_seed`
    (old spelling: `seed`) seeds the model's own generator, which draws the initial weights and the
    weights of characters that join the vocabulary later. `history` is the training curve
    (charstream.history).

    The vocabulary grows from the stream up to `max_vocab` characters; past that, new characters map
    to UNK (U+FFFD), which takes the last slot. With `fixed_vocab=True` it never grows: characters
    outside it map to U+FFFD if the vocabulary holds it, else they are skipped with one warning.
    """

    def __init__(self, vocab, hidden_size=None, random_seed=None, max_vocab=DEFAULT_MAX_VOCAB, fixed_vocab=False,
                 cell="rnn", layers=1, dtype="float64", *, seed=None):
        random_seed = _alias(random_seed, seed, "random_seed", "seed")
        self.cell, self.layers = cells.check(cell, layers)
        dtype = check_dtype(dtype)
        defaults = cells.DEFAULTS[self.cell]
        hidden_size = defaults.hidden_size if hidden_size is None else hidden_size
        if isinstance(hidden_size, bool) or not isinstance(hidden_size, (int, np.integer)) or hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive integer, got {hidden_size!r}")
        chars = list(vocab)
        if len(set(chars)) != len(chars):
            raise ValueError("vocab must hold distinct characters")
        if any(isinstance(c, str) and len(c) == 1 and 0xD800 <= ord(c) <= 0xDFFF for c in chars):
            raise ValueError("vocab holds a lone surrogate (not a character of any UTF-8 text; "
                             "invalid bytes are read as U+FFFD)")
        self.vocabulary = Vocab(chars, max_vocab, fixed_vocab)
        self.rng = np.random.default_rng(random_seed)
        # the dropout masks' key (ext/lanes_ops.h), from the seed without drawing from rng (its draws are the weights)
        self.random_seed_key = int(np.random.SeedSequence(random_seed).generate_state(1, np.uint64)[0] >> 1)
        self.file_format_version = None   # the version of the file it was loaded from, if any
        H = int(hidden_size)
        # drawn in float64 whatever the dtype (the same draws), then rounded once to float32
        self.params = {p.name: p.initial(self.rng).astype(dtype) for p in self._table(len(chars), H)}
        self.state = TrainState(mem={k: np.zeros_like(v) for k, v in self.params.items()},
                                hprev=np.zeros(cells.state_size(self.cell, self.layers, H), dtype=dtype),
                                seq_length=defaults.seq_length, learning_rate=defaults.learning_rate)
        if "v" in cells.slots(self.cell):
            self.state.moments = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.history = History()   # the training curve (charstream.history), saved with the model
        self.validation = None     # what validation measured (charstream.validation), saved with the model
        self.best = None           # {"params", "hprev"}: the parameters of the lowest validation loss, while training
        self.dropout = 0.0         # the training kernel's dropout rate (charstream.validation), saved with the model
        # Adam's step for the one-hot input's weights (Wxh of layer 0) is input_lr times the learning rate:
        # one column moves per character, where an embedding's every weight would (cells.INPUT_LR)
        self.input_lr = cells.INPUT_LR if cells.OPTIMIZER[self.cell] == "adam" else 1.0

    def _table(self, V=None, H=None):
        """This model's rows of the cell's parameter table (charstream.cells)."""
        return cells.params(self.cell, self.layers, self.vocab_size if V is None else V,
                            self.hidden_size if H is None else H)

    @property
    def vocab(self):
        """The characters in index order (`vocabulary` is the table itself: stoi, lookup, encode)."""
        return tuple(self.vocabulary.itos)

    @property
    def max_vocab(self):
        """The most characters the vocabulary may hold, U+FFFD (the unknown symbol) included."""
        return self.vocabulary.max_size

    @max_vocab.setter
    def max_vocab(self, n):
        n = check_max_size(n)
        if n < self.vocab_size:
            raise ValueError(f"max_vocab={n} is below the model's {self.vocab_size} characters")
        if n > self.vocabulary.max_size:
            self.vocabulary.forget_unk_readings()
            self._warned_cap = False
        self.vocabulary.max_size = n

    @property
    def fixed_vocab(self):
        """True when the vocabulary never grows."""
        return self.vocabulary.fixed

    @fixed_vocab.setter
    def fixed_vocab(self, fixed):
        if self.vocabulary.fixed and not fixed:
            self.vocabulary.forget_unk_readings()
        self.vocabulary.fixed = bool(fixed)

    @property
    def dtype(self):
        """"float64" or "float32": the type of every parameter, memory and hidden state."""
        return self.params["Whh"].dtype.name

    @property
    def hidden_size(self):
        return self.params["Whh"].shape[1]

    @property
    def vocab_size(self):
        return len(self.vocabulary)

    def __repr__(self):
        cell = "" if (self.cell, self.layers) == ("rnn", 1) else f"{self.cell}, layers={self.layers}, "
        return f"Model({cell}V={self.vocab_size}, H={self.hidden_size}, chunks={self.state.chunks})"

    def grow(self, chars):
        """Append unseen characters to the vocabulary in order; each gets a new column of Wxh, then a
        new row of Why, drawn `randn * 0.01` from the model's generator, and zero `by` and memories
        (for every cell: the parameters the cell's table says grow, charstream.cells)."""
        new = self.vocabulary.add(chars)
        if self.vocabulary.capped and not getattr(self, "_warned_cap", False):
            self._warned_cap = True
            warnings.warn(f"the vocabulary is full (max_vocab={self.max_vocab}): further new characters "
                          f"are read as {UNK!r} (U+FFFD)", CharstreamWarning, stacklevel=3)
        if not new:
            return new
        growing = [p for p in self._table() if p.grows is not None]
        draws = {p.name: np.empty((len(new),) + tuple(np.delete(p.shape, p.grows))) for p in growing}
        for i in range(len(new)):            # character by character, in table order (Wxh, then Why)
            for p in growing:
                draws[p.name][i] = self.rng.standard_normal(draws[p.name].shape[1:]) * p.scale if p.scale else 0
        for p in growing:
            add = np.moveaxis(draws[p.name], 0, p.grows).astype(self.dtype)
            self.params[p.name] = np.ascontiguousarray(np.concatenate([self.params[p.name], add], axis=p.grows))
            for memory in (self.state.mem, self.state.moments):
                if p.name in memory:
                    memory[p.name] = np.ascontiguousarray(
                        np.concatenate([memory[p.name], np.zeros_like(add)], axis=p.grows))
            if self.best is not None:   # the best model gets the same new characters' weights
                self.best["params"][p.name] = np.ascontiguousarray(
                    np.concatenate([self.best["params"][p.name], add], axis=p.grows))
        return new

    def kernel(self, seq_length=None, train=False, lanes=1, threads=1):
        """A compiled kernel over the current parameter arrays (rebuild it after `grow`): for float64 and
        one lane, Kernel for one rnn layer and CellKernel for any other cell or layer count; else
        LaneKernel (float32, or several lanes, on `threads`). They have the same methods."""
        T = seq_length or (self.state.seq_length if train else 1)   # sampling and scoring need no chunk buffers
        st = self.state
        dropout = self.dropout if train else 0.0   # never when scoring or sampling
        if self.dtype != "float64" or lanes > 1 or dropout > 0:
            kernel = LaneKernel(self.params, st.mem if train else None, T, cell=self.cell, layers=self.layers,
                                moments=st.moments if train else None, steps=st.steps if train else None,
                                lanes=lanes, threads=threads)
            if dropout > 0:
                kernel.set_dropout(dropout, self.dropout_seed)
            kernel.input_lr = self.input_lr
            return kernel
        if (self.cell, self.layers) == ("rnn", 1):
            return Kernel(self.params, self.state.mem if train else None, T)
        st = self.state
        kernel = CellKernel(self.params, st.mem if train else None, T, cell=self.cell, layers=self.layers,
                            moments=st.moments if train else None, steps=st.steps if train else None)
        kernel.input_lr = self.input_lr
        return kernel

    def encode(self, text, what="text"):
        """int32 indices of the characters of `text` in the vocabulary; unknown ones are skipped
        with one CharstreamWarning naming them."""
        idx = self.vocabulary.encode(text)
        if (idx < 0).any():
            unknown = sorted({c for c in text if c not in self.vocabulary})
            shown = ", ".join(repr(c) for c in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
            warnings.warn(f"{what} has characters the model has never seen, skipped: {shown}",
                          CharstreamWarning, stacklevel=3)
            idx = idx[idx >= 0]
        return np.ascontiguousarray(idx, dtype=np.int32)

    def start_state(self, fresh_state=False):
        """A copy of the hidden state that generation and scoring start from: the state training
        left (`state.hprev`), or zeros with `fresh_state` (min-char-rnn's sampling starts from the
        live state too; a trained RNN started from zeros can fall into a state training never saw)."""
        return np.zeros_like(self.state.hprev) if fresh_state else self.state.hprev.copy()

    def generation_kernel(self, lanes=1, threads=1):
        """The kernel generation samples with: for float64 one-layer rnn models `Kernel`
        (min-char-rnn's, the fastest for one sequence; a batch's lanes take turns on it), else a
        LaneKernel of `lanes` on `threads` (one lane for `generate`: a lane's text is the same on any
        number of lanes, see charstream.batching). Scoring keeps `kernel()`."""
        if (self.dtype, self.cell, self.layers) == ("float64", "rnn", 1):
            return Kernel(self.params, None, 1)
        return LaneKernel(self.params, None, 1, cell=self.cell, layers=self.layers, lanes=lanes, threads=threads)

    def generate_blocks(self, prompt="", temperature=1.0, random_seed=None, first_block=32, max_block=4096,
                        sampler=None, top_k=None, top_p=None, fresh_state=False, length=None, *, seed=None):
        """Like `generate`, but yields the continuation as strings of growing length (cheaper to print):
        first_block, then twice as many ... up to max_block characters (256 when the sampler runs in Python)."""
        prompt = _alias(prompt if prompt != "" else None, seed, "prompt", "seed") or ""
        request = batching.Request(prompt, temperature, random_seed, sampler, top_k, top_p, fresh_state, length)
        lane = batching.prepare(self, request, first_block=first_block)
        batch = batching.Batch(self, 1, 1, first_block, max_block)
        batch.add(lane)
        batch.prime()
        return batching.blocks(batch, lane)

    def generate_many(self, requests, threads=1, first_block=32, max_block=4096):
        """Several sequences generated together: an iterator of `(index, text)` pieces, each the next
        characters of request `index`'s continuation, as they are drawn (pieces of one request
        arrive in order; its text is the concatenation of its pieces).

        `requests` is a list of dicts of `generate`'s keyword arguments (prompt, temperature,
        random_seed, sampler, top_k, top_p, fresh_state, length), `charstream.batching.Request`s or
        prompt strings. Each request's text is what `generate` gives alone with the same arguments,
        to the character, whatever the other requests are. The iterator ends when every request with
        a length is done (never, if one has none). Every argument is checked before this returns;
        a sampler that fails raises CharstreamError from the iterator. `threads`: the kernel's team."""
        return batching.generate_many(self, requests, threads, first_block, max_block)

    def generate(self, prompt="", temperature=1.0, random_seed=None, sampler=None, top_k=None, top_p=None,
                 fresh_state=False, length=None, *, seed=None):
        """An iterator of one-character strings, endless unless `length` says how many: `prompt` (old
        spelling: `seed`, the CLI's `--seed`) primes
        the hidden state training left (a zero state with `fresh_state=True`), then each step picks
        the next character from `softmax(y / temperature)` and yields it. The same `random_seed` gives
        the same text, whatever the length (`length=n` is the first n characters of the endless
        iterator, and samples no more than those, where `islice` may have sampled up to 4,095
        ahead); the training state is not touched.

        `sampler` is a name (`"temperature"`, the default, `"greedy"`, `"top-k"`, `"top-p"` or a
        plugin's) or a callable `(probs, rng) -> int`; `top_k` / `top_p` cut probs to the k most
        probable characters / to the nucleus of mass p before it picks (see `charstream.samplers`).
        """
        prompt = _alias(prompt if prompt != "" else None, seed, "prompt", "seed") or ""
        blocks = self.generate_blocks(prompt, temperature, random_seed, sampler=sampler, top_k=top_k, top_p=top_p,
                                      fresh_state=fresh_state, length=length)
        return itertools.chain.from_iterable(blocks)   # C-level: about 2% faster than a generator expression

    def evaluate(self, text, fresh_state=False, adapt=False):
        """Mean cross-entropy of `text` in nats/char, the hidden state carried from where training
        left it (zeros with `fresh_state`); characters outside the vocabulary are skipped. With
        `adapt`, a copy of the model trains on each chunk right after scoring it (dynamic
        evaluation); this model is never changed. See `charstream.scoring`."""
        result = score_adaptive(self, [text], fresh_state=fresh_state) if adapt else \
            score(self, [text], fresh_state=fresh_state)
        if result.predicted == 0:
            raise ValueError("evaluate needs at least two characters the model knows")
        return result.nats_per_char

    @property
    def dropout_seed(self):
        """The seed of the dropout masks: drawn once from the model's generator state as it was created
        (docs/kernel.md), so that masks depend on the model and the update step alone."""
        return int(self.random_seed_key)

    def save(self, path):
        """Write the model and its training state to one `.npz` file, atomically."""
        store.write(path, *self.to_arrays())

    @classmethod
    def load(cls, path, resume=False):
        """The model saved at `path`; ModelFileError saying what is wrong with any other file.

        A file that kept a best model (training scored a validation text: charstream.validation)
        holds two sets of parameters: by default this is the best one, the model to use (generate,
        eval, serve); `resume=True` gives the current one to go on training (with the best in `best`),
        as `charstream.train` does."""
        meta, arrays = store.read(path)
        try:
            return cls.from_arrays(meta, arrays, where=path, resume=resume)
        except ValueError as e:
            raise ModelFileError(f"{path}: corrupt model file ({e})") from None

    def to_arrays(self):
        """(meta, arrays): the JSON-able facts and the plain arrays a model file holds."""
        st = self.state
        meta = {
            "cell": self.cell,
            "layers": self.layers,
            "hidden_size": self.hidden_size,
            "seq_length": st.seq_length,
            "learning_rate": st.learning_rate,
            "chunks": st.chunks,
            "chars_seen": st.chars_seen,
            "chars_trained": st.chars_trained,
            "smooth_loss": None if math.isnan(st.smooth_loss) else st.smooth_loss,
            "reset_every": st.reset_every,
            "rng": self.rng.bit_generator.state,
            "max_vocab": self.max_vocab,
            "fixed_vocab": self.fixed_vocab,
        }
        if self.dtype != "float64":
            meta["dtype"] = self.dtype
        if st.lanes > 1:
            meta.update(lanes=st.lanes, block=st.block, round_step=st.round_step)
        if st.moments:
            meta["steps"] = int(st.steps[0])
        if self.dropout:
            meta["dropout"] = self.dropout
        if self.input_lr != 1.0:
            meta["input_lr"] = self.input_lr
        meta["dropout_seed"] = self.random_seed_key
        meta.update(self.history.to_meta())
        if self.validation is not None:
            meta["validation"] = dict(self.validation)
        arrays = dict(self.params)
        arrays.update({"m" + k: v for k, v in st.mem.items()})
        arrays.update({"v" + k: v for k, v in st.moments.items()})
        arrays.update(hprev=st.hprev, vocab=codepoints("".join(self.vocab)),
                      tail=np.asarray(st.tail, dtype=np.uint32))
        if st.lanes > 1:
            arrays["hlanes"] = st.hlanes
        if self.best is not None and self.validation is not None:
            # the best model under the plain names (what every reader uses), the current one to resume
            arrays.update({store.CURRENT + k: v for k, v in self.params.items()}, **{store.CURRENT + "hprev": st.hprev})
            arrays.update(self.best["params"], hprev=self.best["hprev"])
            meta["best_kept"] = True
            if "final_loss" in self.validation:   # the end scored lower: readers get it; a resumed run the best validated
                arrays.update({store.VALIDATED + k: v for k, v in self.best["params"].items()},
                              **{store.VALIDATED + "hprev": self.best["hprev"]})
                arrays.update(self.params, hprev=st.hprev)
                meta["final_kept"] = True
        return meta, arrays

    @classmethod
    def from_arrays(cls, meta, arrays, where="the model file", resume=False):
        """The model `to_arrays` described (as `charstream.store.read` returns it, checked); a malformed
        training history is dropped with a CharstreamWarning naming `where`. With a best model kept,
        the best parameters (or with `resume`, the current ones; see `load`)."""
        model = cls.__new__(cls)
        model.cell, model.layers = cells.check(meta["cell"], meta["layers"])
        model.vocabulary = Vocab(list(to_text(arrays["vocab"])), meta["max_vocab"], meta["fixed_vocab"])
        model.rng = np.random.default_rng(0)   # its state is set from the file next
        try:
            model.rng.bit_generator.state = meta["rng"]
        except Exception:
            raise ValueError("bad random generator state") from None
        model.file_format_version = meta.get("format_version")
        names = cells.names(model.cell, model.layers)
        model.params = {k: arrays[k] for k in names}
        hprev, model.best = arrays["hprev"], None
        model.validation = meta.get("validation")
        if meta.get("best_kept") and resume:
            model.best = {"params": model.params, "hprev": hprev}
            if meta.get("final_kept"):   # the run goes on from its best validated model, as one run would
                model.best = {"params": {k: arrays[store.VALIDATED + k] for k in names},
                              "hprev": arrays[store.VALIDATED + "hprev"]}
                model.validation = without_final(model.validation)
            model.params = {k: arrays[store.CURRENT + k] for k in names}
            hprev = arrays[store.CURRENT + "hprev"]
        model.dropout = meta.get("dropout", 0.0)
        model.input_lr = float(meta.get("input_lr", 1.0))   # files from before it: 1, as they trained
        model.random_seed_key = meta.get("dropout_seed", 0)
        model.state = TrainState(mem={k: arrays["m" + k] for k in names}, hprev=hprev,
                                 tail=arrays["tail"].copy(), seq_length=meta["seq_length"],
                                 learning_rate=meta["learning_rate"], chunks=meta["chunks"],
                                 chars_seen=meta["chars_seen"], chars_trained=meta["chars_trained"],
                                 smooth_loss=meta["smooth_loss"], reset_every=meta["reset_every"])
        if "v" in cells.slots(model.cell):
            model.state.moments = {k: arrays["v" + k] for k in names}
            model.state.steps[0] = meta["steps"]
        if meta.get("lanes", 1) > 1:
            model.state.lanes, model.state.block = meta["lanes"], meta["block"]
            model.state.round_step, model.state.hlanes = meta["round_step"], arrays["hlanes"]
        model.history = History.from_meta(meta, where)
        return model


def _alias(value, old, name, old_name):
    """`value`, or the same option given by its old name; TypeError if both are."""
    if old is None:
        return value
    if value is not None:
        raise TypeError(f"give {name} or its old spelling {old_name}, not both")
    return old

