"""`charstream.train`: the command's whole training run (budgets, annealing, checkpoints, the loss log, progress) as one call.

    summary = charstream.train(["corpus.txt"], model="lstm.npz", cell="lstm", passes=100, max_seconds=180)

`charstream train` is a thin wrapper over it: the same options give the same model file, to the
bit. Options are the command's long options in Python spelling (`Options`); signals and terminal
output stay in the command, which passes its signal handling in as `interrupts`.
"""
import contextlib
import functools
import itertools
import math
import numbers
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import warnings

import numpy as np

from .cells import DEFAULTS, MIN_LANE_CHUNKS
from .checkpoint import Checkpoint, OptionError, open_model, writer_lock
from .errors import CharstreamError, CharstreamWarning, SourceFailed
from .model import Model
from .progress import Extent, Meter, Report
from .schedule import Anneal
from .sources import chain_sources, check_source, limit_chars, open_source, repeat_sources, with_idle
from .sources.dispatch import scheme_of
from .sources.files import path_of
from .trainer import Trainer
from . import validation as val

NEW_MODEL = ("cell", "layers", "hidden_size", "random_seed", "vocab", "dtype")   # options that only shape a new model (open_model's)


@dataclass
class Options:
    """The options of `charstream.train`: `charstream train`'s long options, `--hidden-size` as
    `hidden_size`. None is the default of the model (or of a new one); see docs/cli.md."""

    # a new model's shape: an existing model must agree (OptionError), or they are ignored with a warning
    cell: Optional[str] = None              # --cell: rnn (default), gru or lstm
    layers: Optional[int] = None            # --layers: cells stacked (default 1)
    hidden_size: Optional[int] = None       # --hidden-size: H (default per cell, charstream.cells.DEFAULTS)
    random_seed: Optional[int] = None       # --random-seed: seed of a new model's weights
    vocab: Optional[str] = None             # --vocab: the characters a new model starts with, in order
    dtype: Optional[str] = None             # --dtype: float64 (default) or float32
    # the model's settings, saved in it
    max_vocab: Optional[int] = None         # --max-vocab: most characters the vocabulary may hold
    fixed_vocab: Optional[bool] = None      # --fixed-vocab / --open-vocab
    seq_length: Optional[int] = None        # --seq-length: characters per truncated-backprop chunk
    learning_rate: Optional[float] = None   # --learning-rate
    reset_every: Optional[int] = None       # --reset-every: zero the hidden state every N characters trained
    lanes: Optional[int] = None             # --lanes: stretches of the text trained side by side (default 1)
    # this run
    anneal: Optional[float] = None          # --anneal: fraction of a budget the learning rate falls over
    passes: Optional[int] = None            # --passes: read the file sources this many times (default 1; with
                                            # a budget and only file sources: until the budget or patience ends)
    max_seconds: Optional[float] = None     # --max-seconds: stop after this long, and save
    max_chars: Optional[int] = None         # --max-chars: stop after reading this many characters, and save
    checkpoint_every: float = 60.0          # --checkpoint-every: seconds between saves (0: only at the end)
    report_every: float = 2.0               # --report-every: seconds between progress reports
    log: Optional[str] = None               # --log: append one row per report (CSV if *.csv, else JSON lines)
    threads: Optional[int] = None           # --threads: the kernel's threads (default: the cores this process may use)
    # validation, the best model kept, early stopping, dropout (charstream.validation)
    validate: Any = None                    # --validate: a source scored as the validation text (False: none at all)
    val_fraction: Optional[float] = None    # --val-fraction: hold out F of each file source, in blocks spread through it (0 < F <= 0.5)
    validate_every: Optional[int] = None    # --validate-every: characters trained between validations
    patience: Optional[int] = None          # --patience: stop after N validations without a new best (0: never)
    dropout: Optional[float] = None         # --dropout: the rate of the non-recurrent connections, [0, 1)

    def __post_init__(self):
        for name, lo, kind in (("passes", 1, int), ("max_chars", 1, int), ("max_seconds", 0, float),
                               ("checkpoint_every", 0, float), ("report_every", 0, float),
                               ("validate_every", 1, int), ("patience", 0, int), ("dropout", 0, float),
                               ("val_fraction", 0, float)):
            x = getattr(self, name)
            if x is None and name not in ("checkpoint_every", "report_every"):
                continue
            ok = not isinstance(x, bool) and isinstance(x, numbers.Integral if kind is int else numbers.Real)
            if not ok or not math.isfinite(x) or x < lo or (name == "max_seconds" and x == 0):
                what = f"a whole number >= {lo}" if kind is int else ("a number > 0" if name == "max_seconds" else
                                                                      "a number >= 0")
                raise OptionError(f"{name} must be {what}, got {x!r}", name)
        if self.dropout is not None and not self.dropout < 1:
            raise OptionError(f"dropout must be a rate in [0, 1), got {self.dropout!r}", "dropout")
        if self.val_fraction is not None and not 0 < self.val_fraction <= val.MAX_FRACTION:
            raise OptionError(f"val_fraction must be in (0, {val.MAX_FRACTION:g}], got {self.val_fraction!r}",
                              "val_fraction")
        if self.validate is not None and self.val_fraction is not None:
            raise OptionError("give validate or val_fraction, not both", "val_fraction")


@dataclass(frozen=True)
class Summary:
    """What one `charstream.train` run did."""

    path: Optional[str]         # the model file (None: a Model object, trained in memory)
    model: Any                  # the model, as trained
    created: bool               # a new model (no file before)
    stopped: str                # "end" (the stream ended), "max_seconds", "max_chars" or "patience"
    seconds: float              # wall time of the run
    chars_seen: int             # characters received in this run
    chars_trained: int          # characters trained in this run
    chunks: int                 # chunks trained in this run
    saves: int                  # times the file was written
    report: Optional[Report]    # the last progress report (None when nothing trained)
    validation: Optional[dict] = None   # the last validation's figures and the best's (None: none scored)
    validations: int = 0        # validations in this run
    passes: Optional[int] = None        # passes over the file sources this run was given (None: until a budget)
    held_out: int = 0           # characters held out of the file sources as the validation text
    dropout: float = 0.0        # the dropout rate trained with


class EarlyStop(Exception):
    """Patience ran out: stop, save."""


class NoText(CharstreamError):
    """The sources gave no characters at all (and no budget stopped the run first)."""


class BudgetReached(Exception):
    """The --max-seconds budget ran out: stop, save."""


class Deadline:
    """Raises BudgetReached from `check()` once `seconds` have passed (None: never)."""

    def __init__(self, seconds):
        self.end = None if seconds is None else time.monotonic() + seconds

    def check(self, now=None):
        if self.end is not None and (time.monotonic() if now is None else now) >= self.end:
            raise BudgetReached()


def train(sources, model, progress=None, interrupts=None, **options):
    """Train `model` (a path: resumed, or created with the new-model options; or a Model, trained in
    memory and not saved) on `sources` (source strings as the command takes them, iterables of str,
    or one source string), in order, as one stream, until it ends or a budget runs out; return a
    Summary. `progress(report)` is called with each Report (None: no reports). `**options` are
    `Options`' fields. See docs/python.md."""
    return Training(sources, model, progress, interrupts, **options).run()


class Training:
    """One run of `train`, as an object: after a KeyboardInterrupt (or another BaseException) `saved`
    tells whether the model file was saved on the way out. That needs `interrupts` (signals deferred
    while the model is mid-update, as the command does); without it the file keeps its last checkpoint."""

    def __init__(self, sources, model, progress=None, interrupts=None, **options):
        try:
            self.options = o = Options(**options)
        except TypeError as e:   # an unknown keyword: say so as any function does
            raise TypeError(str(e).replace("Options.__init__()", "train()").replace("__init__()", "train()")) \
                from None
        if isinstance(sources, (str, os.PathLike)):
            sources = [sources]
        sources = [os.fspath(s) if isinstance(s, os.PathLike) else s for s in sources]
        for s in sources:
            if isinstance(s, str):
                check_source(s)
        if o.passes is not None and o.passes > 1:
            if not all(isinstance(s, str) for s in sources):
                raise OptionError("an iterable cannot be read twice; passes needs file sources", "passes")
            try:
                repeat_sources(sources, 2)
            except CharstreamError as e:
                raise OptionError(f"{e}; passes needs file sources", "passes") from None
        files = bool(sources) and all(isinstance(s, str) and _is_file(s) for s in sources)
        budget = o.max_seconds is not None or o.max_chars is not None
        self.passes = o.passes if o.passes is not None else (None if budget and files else 1)   # None: unbounded
        if self.passes is None and o.max_seconds is None and o.max_chars <= _chars_in(sources):
            self.passes = 1   # a character budget within one pass: one pass
        repeated = self.passes is None or self.passes > 1
        self.pass_sources, self.validator, self.held_out = list(sources), None, 0
        text, where = self._validation_text(sources, files, repeated)
        if text is not None:
            patience = (val.DEFAULT_PATIENCE if repeated else 0) if o.patience is None else o.patience
            self.validator = val.Validator(text, o.validate_every, patience, where=where)
        elif o.patience:
            raise OptionError("patience counts validations: give a validation text (validate or val_fraction)",
                              "patience")
        # None: decided once the model is open (val.default_dropout: repeated passes over a small text)
        self.dropout = (None if repeated else 0.0) if o.dropout is None else float(o.dropout)
        if o.log is not None:
            folder = os.path.dirname(os.path.abspath(o.log))
            if not os.path.isdir(folder):
                raise CharstreamError(f"{o.log}: cannot open the log: there is no folder {folder}")
        if isinstance(model, Model):
            given = [k for k in NEW_MODEL if getattr(o, k) is not None]
            if given:
                raise OptionError(f"{given[0]} only shapes a new model: give a path, or build the Model with it",
                                  given[0])
        self.sources, self.model, self.progress, self.interrupts = sources, model, progress, interrupts
        self.saved = False   # saved on the way out of an interrupted run

    def _validation_text(self, sources, files, repeated):
        """(the validation text, where it is from), or (None, None); with a held-out fraction the file
        sources in `pass_sources` become their trained parts (read whole, in memory)."""
        o = self.options
        if o.validate is False:
            return None, None
        if o.validate is not None:
            where = o.validate if isinstance(o.validate, str) else "the validation iterable"
            if isinstance(o.validate, str):
                try:
                    check_source(o.validate)
                except CharstreamError as e:
                    raise OptionError(f"the validation source: {_first_line(e)}", "validate") from None
            try:
                text = "".join(open_source(o.validate) if isinstance(o.validate, str) else o.validate)
            except CharstreamError as e:
                raise OptionError(f"the validation source: {_first_line(e)}", "validate") from None
            except OSError as e:
                raise OptionError(f"the validation source {where}: {e.strerror or e}", "validate") from None
            if len(text) < val.MIN_CHARS:
                raise OptionError(f"the validation source {where} gives {len(text)} character"
                                  f"{'' if len(text) == 1 else 's'}; a validation text needs at least "
                                  f"{val.MIN_CHARS}", "validate")
            return text, where
        if o.val_fraction is None and not (repeated and files):
            return None, None
        if not files:
            raise OptionError("val_fraction holds out part of file sources; "
                              f"{_where([s for s in sources if not (isinstance(s, str) and _is_file(s))])} "
                              f"is not a file: give the validation text with validate", "val_fraction")
        texts = ["".join(open_source(s)) for s in sources]
        fraction = o.val_fraction
        if fraction is None:   # the default: DEFAULT_FRACTION, but no more than DEFAULT_MAX_CHARS in all
            fraction = min(val.DEFAULT_FRACTION, val.DEFAULT_MAX_CHARS / max(1, sum(map(len, texts))))
        kept, held = [], []
        for t in texts:
            trained, out = val.split_held_out(t, fraction)
            kept.append([trained])
            held.append(out)
        text = "".join(held)
        if len(text) < val.MIN_CHARS:
            if o.val_fraction is None:   # the default: too little text to hold any out
                return None, None
            raise OptionError(f"val_fraction {fraction:g} holds out {len(text)} characters of {_where(sources)}; "
                              f"a validation text needs at least {val.MIN_CHARS}", "val_fraction")
        self.pass_sources, self.held_out = kept, len(text)
        return text, f"{fraction:.3g} of {_where(sources)} (blocks spread through it)"

    def _stream(self):
        """The sources of the whole run, passes included (endless when passes repeat until a budget)."""
        if self.passes is None:
            return chain_sources(itertools.chain.from_iterable(itertools.repeat(self.pass_sources)))
        return chain_sources(self.pass_sources * self.passes)

    def _default_lanes(self, model):
        """The cell's default lanes for a model that has trained nothing yet, on file sources long
        enough to give each lane MIN_LANE_CHUNKS chunks a pass (fewer lanes for a shorter text); None
        (the model's own) for anything else, streams included."""
        st, want = model.state, DEFAULTS[model.cell].lanes
        if want <= 1 or st.chunks > 0 or len(st.tail) > 0 or self._pass_bytes() is None:
            return None
        T = self.options.seq_length or st.seq_length
        lanes = min(want, self._round_chars() // (MIN_LANE_CHUNKS * (T + 1)))
        return lanes if lanes > 1 else None

    @functools.cached_property
    def _pass_chars(self):
        """The characters of one pass over the (file) sources: UTF-8 lead bytes of each file (read once
        a run: the sources of a pass are fixed when the run is built)."""
        chars = 0
        for s in self.pass_sources:
            if isinstance(s, str):
                data = np.fromfile(path_of(s, scheme_of(s)), dtype=np.uint8)
                chars += int(np.count_nonzero((data & 0xC0) != 0x80))   # UTF-8 lead bytes: characters
            else:
                chars += sum(len(t) for t in s)
        return chars

    def _lane_block(self, lanes):
        """Characters each lane takes of a round: for file sources, their characters (one pass, or the
        --max-chars read of it) over the lanes, so that each lane trains one contiguous region per
        pass; else the Trainer's default."""
        if lanes <= 1 or self._pass_bytes() is None:
            return None
        return max(1, (self._round_chars() - 1) // lanes)

    def _round_chars(self):
        """The characters a new run of lanes splits into their regions: one pass over the file sources,
        or the first --max-chars of it when that stops the run sooner (else the lanes whose regions lie
        past the stop would wait for text that never comes, and nothing would train)."""
        chars, most = self._pass_chars, self.options.max_chars
        return chars if most is None else min(chars, most)

    def _pass_bytes(self):
        """The bytes one pass holds when the sources are all regular files (or their held-in parts), else None."""
        total = 0
        for s in self.pass_sources:
            if isinstance(s, list) and self.held_out:
                total += sum(len(t.encode("utf-8", "surrogatepass")) for t in s)
                continue
            path = path_of(s, scheme_of(s)) if isinstance(s, str) else None
            if path is None or not os.path.isfile(path):
                return None
            total += os.path.getsize(path)
        return total

    def _total_bytes(self):
        """The bytes the sources hold when they are all regular files (passes included), else None."""
        one = self._pass_bytes()
        return None if one is None or self.passes is None else one * self.passes

    def run(self):
        o, lock = self.options, None
        if isinstance(self.model, Model):
            model, path = self.model, None
            if o.max_vocab is not None:
                model.max_vocab = o.max_vocab
            if o.fixed_vocab is not None:
                model.fixed_vocab = o.fixed_vocab
        else:
            path = os.fspath(self.model)
            lock = writer_lock(path)
        try:
            if path is not None:
                model = open_model(path, max_vocab=o.max_vocab, fixed_vocab=o.fixed_vocab,
                                   **{k: getattr(o, k) for k in NEW_MODEL})
            if self.dropout is None:
                self.dropout = val.default_dropout(self._pass_chars, model)
            model.dropout = self.dropout
            if self.validator is not None:
                self.validator.attach(model)
            elif model.validation is not None:   # nothing to choose a best by in this run: the current is the model
                if model.best is not None:
                    warnings.warn("this run scores no validation text: the best model kept so far is dropped, "
                                  "the trained one is the model from now on", CharstreamWarning, stacklevel=3)
                model.validation, model.best = None, None
            try:
                lanes = o.lanes if o.lanes is not None else self._default_lanes(model)
                trainer = Trainer(model, o.seq_length, o.learning_rate, o.reset_every, lanes=lanes,
                                  block=self._lane_block(lanes or model.state.lanes), threads=o.threads)
            except ValueError as e:
                raise OptionError(str(e), "lanes" if "lane" in str(e) else "threads") from None
            if self.validator is not None:
                self.validator.threads = trainer.threads
            fraction = DEFAULTS[model.cell].anneal if o.anneal is None else o.anneal
            schedule = Anneal(fraction, seconds=o.max_seconds, chars=o.max_chars)
            return self._train(model, path, trainer, schedule)
        finally:
            if lock is not None:
                lock.release()

    def _train(self, model, path, trainer, schedule):
        """Train until the stream ends, a budget runs out or a signal comes; signals wait while the
        model is mid-update. `schedule` anneals the learning rate over the budget."""
        o, st, guard = self.options, model.state, self.interrupts
        seen0, chunks0, trained0 = st.chars_seen, st.chunks, st.chars_trained
        log = _open_log(o.log)
        extent = Extent(o.max_seconds, o.max_chars, self._total_bytes())
        start = time.monotonic()
        meter = Meter(model, o.report_every, self.progress, log=log,
                      log_format="csv" if o.log and o.log.lower().endswith(".csv") else "jsonl", extent=extent,
                      start=start)
        checkpoint = None if path is None else \
            Checkpoint(model, path, o.checkpoint_every, guard=guard.deferred if guard else contextlib.nullcontext)
        created = checkpoint is not None and not checkpoint.existed
        deadline = Deadline(o.max_seconds)

        def on_idle():   # no text for a while: the time budget, checkpoints and a report of what trained
            now = time.monotonic()
            deadline.check(now)
            if checkpoint is not None:
                checkpoint.maybe(now)
            meter.idle(now)

        waits = [x for x in (o.checkpoint_every if checkpoint else None, o.max_seconds, o.report_every)
                 if x and x < threading.TIMEOUT_MAX]
        stopped, validator, validations = "end", self.validator, 0
        before = st.chars_trained
        try:
            stream = with_idle(limit_chars(self._stream(), o.max_chars), min(waits + [1.0]), on_idle)
            stream = extent.counted(stream)
            records = trainer.train(guard.allowing_in(stream) if guard else stream)
            records = guard.deferring(records) if guard else records
            try:
                for record in records:
                    now = time.monotonic()
                    schedule.update(trainer, now - start, record.chars - trained0)
                    if validator is not None and validator.due(before, record.chars):
                        with guard.deferred() if guard else contextlib.nullcontext():
                            validator.run(model, model.history.seconds)
                        validations += 1
                        validator.check_memorizing(model, meter.window_loss(record))
                        if validator.exhausted(model):
                            meter.update(record, time.monotonic())
                            raise EarlyStop()
                    before = record.chars
                    meter.update(record, now)
                    if checkpoint is not None:
                        checkpoint.maybe(now)
                    deadline.check(now)
            finally:
                records.close()   # the trainer keeps what it read but did not train, now
            if guard:
                guard.stop()   # the stream has ended: from here on signals are only noted
        except BudgetReached:
            if guard:
                guard.stop()
            stopped = "max_seconds"
        except EarlyStop:
            if guard:
                guard.stop()
            stopped = "patience"
        except (SourceFailed, OSError) as e:   # the text before the failure was good: keep its training
            message = _first_line(e) if isinstance(e, SourceFailed) else f"reading input failed: {e.strerror or e}"
            if checkpoint is not None and st.chars_seen > seen0:
                checkpoint.save()
                raise SourceFailed(f"{message}; what was trained before it is saved to {path}") from None
            raise SourceFailed(_kept(message, checkpoint)) from None
        except CharstreamError as e:   # NonFiniteError, input refused as binary: the file keeps its last save
            e.args = (_kept(_first_line(e), checkpoint),)
            raise
        except MemoryError:
            raise CharstreamError(_kept(f"out of memory (seq length {trainer.seq_length}, hidden size "
                                        f"{model.hidden_size})", checkpoint)) from None
        except BaseException:   # Ctrl-C, SIGTERM: save what arrived, then let the exception go on
            if guard:   # signals were deferred while the model was mid-update: it is whole, save it
                guard.stop()   # a second signal must not cut the save short
                if checkpoint is not None and st.chars_seen > seen0:
                    checkpoint.save()
                    self.saved = True
            raise   # without a guard it may have landed mid-update: the file keeps its last checkpoint
        finally:
            if log is not None:
                log.close()
        if o.max_chars is not None and st.chars_seen - seen0 >= o.max_chars:
            stopped = "max_chars"
        report = None
        if st.chars_seen == seen0:
            if stopped == "end":
                raise NoText(f"no text to train on: {_where(self.sources)} gave no characters; "
                             f"the model was not changed")
        else:
            if validator is not None:   # the model at the end may beat the best validated one
                validator.finish(model)
            meter.report(time.monotonic())
            report = meter.last_report
            if checkpoint is not None:
                checkpoint.save()
        return Summary(path=path, model=model, created=created, stopped=stopped,
                       seconds=time.monotonic() - start, chars_seen=st.chars_seen - seen0,
                       chars_trained=st.chars_trained - trained0, chunks=st.chunks - chunks0,
                       saves=checkpoint.saves if checkpoint else 0, report=report,
                       validation=dict(model.validation) if model.validation else None, validations=validations,
                       passes=self.passes, held_out=self.held_out, dropout=self.dropout)


def _chars_in(sources):
    """The characters of file sources, from their UTF-8 lead bytes."""
    return sum(int(np.count_nonzero((np.fromfile(path_of(s, scheme_of(s)), dtype=np.uint8) & 0xC0) != 0x80))
               for s in sources)


def _is_file(source):
    """Whether a source string names a regular file (which can be read again)."""
    path = path_of(source, scheme_of(source))
    return path is not None and os.path.isfile(path)


def _open_log(path):
    if path is None:
        return None
    try:
        return open(path, "a", encoding="utf-8", newline="")
    except OSError as e:
        raise CharstreamError(f"{path}: cannot open the log: {e.strerror}") from None


def _first_line(e):
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _kept(message, checkpoint):
    """The message, and what the model file holds now."""
    return message if checkpoint is None else f"{message}; {checkpoint.kept()}"


def _where(sources):
    names = [s if isinstance(s, str) else (f"--listen {s.address}" if hasattr(s, "address") else "an iterable")
             for s in sources]
    return ", ".join(dict.fromkeys(names)) or "no source"
