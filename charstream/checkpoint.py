"""Training a model file: take its one-writer lock, resume it or create it, and save it as training goes.

The library side of `charstream train`, usable without click:

    with open_for_training("notes.npz", hidden_size=100) as (model, checkpoint):
        for record in Trainer(model).train(texts):
            checkpoint.maybe()
        checkpoint.save()

Every failure is a CharstreamError with a one-line message; the file keeps its last good save.
"""
import contextlib
import os
import time
import warnings

from . import cells
from .errors import CharstreamError, CharstreamWarning
from .lock import WriterLock
from .model import Model, check_dtype
from .store import remove_stale_temps
from .vocab import DEFAULT_MAX_VOCAB


class OptionError(CharstreamError):
    """An option that does not fit the model file (a new hidden size for an existing model, say);
    `option` names it, as a keyword of `open_model`."""

    def __init__(self, message, option):
        super().__init__(message)
        self.option = option


class SaveFailed(CharstreamError):
    """A save that did not happen; the message says what the file holds now."""


def open_model(path, hidden_size=None, random_seed=None, max_vocab=None, vocab=None, fixed_vocab=None,
               cell=None, layers=None, dtype=None):
    """The model at `path` to go on training, with the options that may change applied (max_vocab,
    fixed_vocab), or a new model when there is no file. Options that only shape a new model must
    agree with an existing one (OptionError) or are ignored with a CharstreamWarning."""
    if os.path.exists(path):
        model = Model.load(path, resume=True)   # the current parameters, the best kept beside them
        for option, given, has in (("hidden_size", hidden_size, model.hidden_size), ("cell", cell, model.cell),
                                   ("layers", layers, model.layers), ("dtype", dtype, model.dtype)):
            if given is not None and given != has:
                what = option.replace("_", " ")
                raise OptionError(f"{path} has {what} {has}; a new {what} needs a new model path", option)
        if random_seed is not None:
            warnings.warn(f"a random seed only seeds new models; {path} already exists", CharstreamWarning)
        if vocab is not None:
            warnings.warn(f"an initial vocabulary only sets up new models; {path} already exists", CharstreamWarning)
        try:
            if max_vocab is not None:
                model.max_vocab = max_vocab
        except ValueError as e:
            raise OptionError(f"{path}: {e}", "max_vocab") from None
        if fixed_vocab is not None:
            model.fixed_vocab = fixed_vocab
        return model
    if fixed_vocab and not vocab:
        raise OptionError("a new model with a fixed vocabulary needs its characters: give --vocab CHARS",
                          "fixed_vocab")
    for option, check in (("cell", lambda: cells.check(cell or "rnn", 1)),
                          ("layers", lambda: cells.check("rnn", layers or 1)),
                          ("dtype", lambda: check_dtype(dtype or cells.DEFAULTS[cell or "rnn"].dtype))):
        try:
            check()
        except ValueError as e:
            raise OptionError(str(e), option) from None
    try:
        return Model(dict.fromkeys(vocab or ""), hidden_size, random_seed=random_seed,
                     max_vocab=max_vocab or DEFAULT_MAX_VOCAB, fixed_vocab=bool(fixed_vocab),
                     cell=cell or "rnn", layers=layers or 1, dtype=dtype or cells.DEFAULTS[cell or "rnn"].dtype)
    except ValueError as e:   # what is left to refuse is the initial vocabulary
        raise OptionError(str(e), "vocab") from None
    except MemoryError:
        raise CharstreamError(f"not enough memory for a model of hidden size {hidden_size}") from None


def writer_lock(path):
    """Create the model's folder if needed and take its one-writer lock (released when the lock is
    closed or the process ends), then remove temporary files killed saves left; CharstreamError if not."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise CharstreamError(f"{folder}: not a directory: the model could not be saved there")
    if not os.path.isdir(folder):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise CharstreamError(f"cannot create {folder}: {e.strerror}") from None
    denied = CharstreamError(f"{folder}: {'read-only file system' if _read_only(folder) else 'permission denied'}: "
                             f"the model could not be saved there")
    if not os.access(folder, os.W_OK):
        raise denied
    lock = WriterLock(path)
    try:
        lock.acquire()
    except CharstreamError:
        raise
    except PermissionError:
        raise denied from None
    except OSError as e:
        raise CharstreamError(f"{folder}: {e.strerror}: the model could not be saved there") from None
    remove_stale_temps(path)   # we are the only writer: any temporary file is from a killed save
    return lock


def _read_only(folder):
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def open_for_training(path, every=60.0, **options):
    """(model, checkpoint) for `path` under its writer lock, held until the block ends."""
    lock = writer_lock(path)
    try:
        model = open_model(path, **options)
        yield model, Checkpoint(model, path, every)
    finally:
        lock.release()


class Checkpoint:
    """Saves the model every `every` seconds (0: never) when there is something new to save.

    A periodic save that fails (a full disk) is a CharstreamWarning, and is retried later while
    training goes on; `save()` failing raises SaveFailed. Either way the file keeps its last save.
    `guard` is a context manager factory that saves run inside (the CLI defers signals with it).
    """

    def __init__(self, model, path, every=60.0, guard=contextlib.nullcontext):
        self.model, self.path, self.every, self.guard = model, path, every, guard
        self.last = time.monotonic()
        self.existed = os.path.exists(path)
        self.saved = self._progress() if self.existed else None   # what the file holds
        self.saves = 0
        self.failing = False   # the last periodic save failed

    def _progress(self):
        st = self.model.state   # text received and chunks trained: a save is due when either moved
        return st.chars_seen, st.chunks

    def maybe(self, now=None):
        """Save if one is due."""
        now = time.monotonic() if now is None else now
        if self.every and now - self.last >= self.every and self._progress() != self.saved:
            try:
                self.save()
            except SaveFailed as e:
                self.last = time.monotonic()
                if not self.failing:   # once per run of failures, not at every retry
                    warnings.warn(f"checkpoint failed, training goes on and will retry: {e}", CharstreamWarning)
                self.failing = True
            else:
                self.failing = False

    def save(self):
        """Save now, unless the file already holds this state."""
        if self._progress() == self.saved:
            return
        with self.guard():   # a signal waits for the save, and for knowing it is done
            try:
                self.model.save(self.path)
            except CharstreamError as e:   # parameters that became NaN or infinite are never saved
                raise SaveFailed(f"{str(e).splitlines()[0]}; {self.kept()}") from None
            except OSError as e:
                raise SaveFailed(f"saving {self.path} failed: {e.strerror or e}; {self.kept()}") from None
            self.last = time.monotonic()
            self.saved = self._progress()
            self.saves += 1

    def kept(self):
        """What the model file holds now, for error messages."""
        if self.saves or self.existed:
            return f"{self.path} keeps its last good save"
        return f"nothing was saved to {self.path}"
