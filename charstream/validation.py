"""Validation while training: the held-out text, its deterministic score, the best model kept, patience.

A validation text is either a source of its own (`--validate`) or `fraction` of the characters of
each file source, in blocks spread evenly through it (`--val-fraction`, `split_held_out`; by default
DEFAULT_FRACTION, at most DEFAULT_MAX_CHARS in all, when file sources are read more than once), which training then never reads. Every `every` characters trained (a count,
never the clock, so a run split in two validates at the same chunks as one run) the model scores it
with a scoring kernel: the known characters cut into K = clamp(n // SEGMENT, 1, MAX_LANES)
contiguous stretches of n // K characters (the last n mod K are not scored), each scored on its own
lane from a zero state. The score is the same to the bit for any thread count. When it is the lowest
so far, a copy of the parameters and hidden state is kept (`model.best`), which the model file holds
as the model every reader uses (docs/file-format.md). `patience` N ends training after N
validations without a new best.
"""
import hashlib
import math
import warnings

import numpy as np

from .errors import CharstreamWarning

DEFAULT_FRACTION = 0.05   # held out of file sources read more than once (docs/quality.md) ...
DEFAULT_MAX_CHARS = 20_000  # ... but no more characters than this in all (what a large corpus holds out
                            # beyond it is text the model could learn from; docs/quality.md)
BLOCK = 2000              # the held-out part is blocks of about this many characters, spread through the text
MAX_FRACTION = 0.5        # --val-fraction is in (0, MAX_FRACTION]
MIN_CHARS = 100           # a validation text has at least this many characters
SEGMENT = 2000            # characters each scoring lane takes at least
MAX_LANES = 32            # scoring lanes at most
COST = 20                 # validate every COST * (validation characters) trained: 1-3% of the time (docs/quality.md)
MIN_EVERY = 10_000        # ... and never more often than every MIN_EVERY characters
DEFAULT_PATIENCE = 0      # --patience when passes repeat (0: never stop early; the best is kept anyway)
DEFAULT_DROPOUT = 0.5     # --dropout when passes repeat over fewer characters than the model has parameters
                          # (docs/quality.md: 0.1, 0.25, 0.5 measured on 32,400 characters; 0.5 cost 0.07 nats/char
                          # on 180,000 at H=128 and 0.02 on 903,000 at H=256); a stream or a big text: none
MEMORIZING = 0.3          # nats/char of validation over training loss that `train` calls memorizing


def digest(text):
    """A short digest of a validation text: a resumed run checks that it scores the same one."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def default_every(n_chars):
    """Characters trained between validations for a validation text of n_chars characters."""
    return max(MIN_EVERY, COST * n_chars)


def default_dropout(chars, model):
    """The dropout rate passes that repeat over `chars` characters get by default: DEFAULT_DROPOUT when
    the text is smaller than the model's parameter count (it can memorize it), else 0."""
    return DEFAULT_DROPOUT if chars < sum(int(p.size) for p in model.params.values()) else 0.0


def split_held_out(text, fraction):
    """(trained, held out): `fraction` of the characters of `text`, as k = max(1, held // BLOCK) blocks of
    equal length (the first held % k one longer) centred at (j + 0.5) / k of the text, j < k, are held
    out; the trained text is the rest, joined. Spread through the text, the held-out part is like the
    whole (the end of a book is often one story: holding out the last 10% of tiny-shakespeare's
    training part cost 0.2 nats/char on its next 10%)."""
    n = len(text)
    held = int(round(n * fraction))
    if held == 0:
        return text, ""
    k = max(1, held // BLOCK)
    kept, out, at = [], [], 0
    for j in range(k):
        size = held // k + (1 if j < held % k else 0)
        start = min(max(int((j + 0.5) * n / k) - size // 2, at), n - size)
        kept.append(text[at:start])
        out.append(text[start:start + size])
        at = start + size
    kept.append(text[at:])
    return "".join(kept), "".join(out)


def score(model, text, threads=1):
    """(nats per character, characters predicted, characters unknown) of `text` as validation scores
    it: see the module docstring. Characters outside the vocabulary are counted and skipped."""
    idx = model.vocabulary.encode(text)
    known = np.ascontiguousarray(idx[idx >= 0], dtype=np.int32)
    unknown = len(idx) - len(known)
    n = len(known)
    K = min(max(n // SEGMENT, 1), MAX_LANES)
    L = n // K
    if L < 2 or model.vocab_size == 0:
        return math.nan, 0, unknown
    rows = known[:K * L].reshape(K, L)
    if K == 1:
        nats = model.kernel().evaluate(np.ascontiguousarray(rows[0]), np.zeros_like(model.state.hprev))
    else:
        h = np.zeros((K, model.state.hprev.shape[0]), dtype=model.state.hprev.dtype)
        threads = threads if K * model.hidden_size >= 2048 else 1   # small products: one thread is faster
        nats = float(np.sum(model.kernel(1, lanes=K, threads=threads).evaluate(rows, h)))
    return nats / (K * (L - 1)), K * (L - 1), unknown


FINAL_KEYS = ("final_loss", "final_chars")   # in `validation`: what the model at the end scored, when it is kept


def without_final(v):
    """A copy of the validation figures `v` without what the end of a run scored."""
    return {k: x for k, x in v.items() if k not in FINAL_KEYS}


class Validator:
    """Scores `text` every `every` characters trained, keeps the best model, counts patience."""

    def __init__(self, text, every=None, patience=0, threads=1, where="the validation text"):
        self.text, self.where = text, where
        self.every = default_every(len(text)) if every is None else int(every)
        self.patience, self.threads = patience, threads
        self.digest = digest(text)
        self.warned = False   # memorizing, said once per run

    def attach(self, model):
        """Start a run on `model`: a best model kept from another validation text starts over (warned)."""
        v = model.validation
        if v is not None and v.get("text") != self.digest:
            warnings.warn("the validation text differs from the one the kept best model was chosen on: "
                          "the best model starts over from this run", CharstreamWarning, stacklevel=3)
            model.validation, model.best = None, None
        elif v is not None and model.best is None:   # loaded without the best (it was not kept)
            model.validation = None

    def due(self, chars_before, chars_after):
        """Whether a validation falls between these characters trained (a multiple of `every` crossed)."""
        return chars_after // self.every > chars_before // self.every

    def run(self, model, seconds):
        """Score now; keep the parameters if they are the best so far. Returns the validation figures."""
        st = model.state
        loss, predicted, unknown = score(model, self.text, self.threads)
        v = dict(model.validation or {"count": 0, "since_best": 0, "best_loss": math.inf, "best_chars": 0,
                                       "best_chunks": 0, "best_seconds": 0.0})
        v = without_final(v)   # a run goes on: its end is scored again when it ends
        if predicted == 0:
            return None
        v.update(loss=loss, chars=st.chars_trained, count=v["count"] + 1, text=self.digest, unknown=unknown,
                 predicted=predicted)
        if loss < v["best_loss"]:
            v.update(best_loss=loss, best_chars=st.chars_trained, best_chunks=st.chunks,
                     best_seconds=round(seconds, 3), since_best=0)
            model.best = {"params": {k: a.copy() for k, a in model.params.items()}, "hprev": st.hprev.copy()}
        else:
            v["since_best"] += 1
        model.validation = v
        model.history.validated(st.chars_trained, loss)
        return v

    def finish(self, model):
        """At the end of a run, score the model as it ends when it has trained since the last
        validation; if it beats the best validated one, readers get it (its figures in `validation`:
        FINAL_KEYS), while the best validated one stays kept for a run that resumes, so that a run split
        in two still equals the run in one. Returns that loss, or None. Not a validation: it counts
        neither for patience nor in `count`."""
        st = model.state
        v = model.validation = None if model.validation is None else without_final(model.validation)
        if v is None or model.best is None or v["chars"] == st.chars_trained:
            return None
        loss, predicted, _ = score(model, self.text, self.threads)
        if predicted == 0:
            return None
        if loss < v["best_loss"]:
            model.validation = dict(v, final_loss=loss, final_chars=st.chars_trained)
        return loss

    def exhausted(self, model):
        """Patience ran out: `patience` validations in a row without a new best."""
        v = model.validation
        return bool(self.patience) and v is not None and v["since_best"] >= self.patience

    def check_memorizing(self, model, train_loss):
        """Warn once when the validation loss is far above the training loss and has stopped falling."""
        v = model.validation
        if self.warned or v is None or not math.isfinite(train_loss) or v["since_best"] < 3:
            return
        if v["loss"] - train_loss > MEMORIZING:
            self.warned = True
            warnings.warn(f"the model is memorizing its training text: training loss {train_loss:.3f}, validation "
                          f"{v['loss']:.3f} nats/char (the best, {v['best_loss']:.3f} at {v['best_chars']:,} "
                          f"characters, is kept); stop earlier with --patience, regularize with --dropout, or "
                          f"give it more text", CharstreamWarning, stacklevel=3)
