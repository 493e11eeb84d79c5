"""Model files: one `.npz` of plain arrays (never pickles), written atomically and validated on read.

This module knows files, not models: `write` takes the meta dict and arrays that `Model.to_arrays`
gives, `read` returns them checked against the cell's parameter table (`charstream.cells`) for
`Model.from_arrays`. The versioning policy is in docs/file-format.md.
"""
import json
import math
import os
import stat
import tempfile
import zipfile

import numpy as np

from .errors import ModelFileError
from . import cells
from .vocab import DEFAULT_MAX_VOCAB, MAX_CODEPOINT, to_text

FORMAT = "charstream-model"
FORMAT_VERSION = 5   # 5: the model at the end kept; 4: a best model kept; 3: float32 models and lanes; 2: meta names the cell and the layers; 1: rnn, one layer
CURRENT = "current_"  # with a best model kept: the prefix of the current parameters and hprev (resumed from)
VALIDATED = "validated_"  # with the model at the end kept (it beat the best validated): the best validated one


def write(path, meta, arrays):
    """Write `meta` (JSON-able) and `arrays` to `path` via a temporary file in the same folder,
    fsync'd, then renamed over it: a crash at any moment leaves either the old file or the new one.
    Arrays that hold NaN or infinities are refused (ModelFileError), and the file keeps its last save."""
    for k, v in arrays.items():
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise ModelFileError(f"refusing to save: {k} has NaN or infinite values")
    path = os.path.realpath(path)   # through a symlink: replace its target, keep the link
    # a file only version 3 can read says so; any other keeps version 2, which older charstreams read
    newer = meta.get("dtype", "float64") != "float64" or meta.get("lanes", 1) > 1
    version = 5 if meta.get("final_kept") else 4 if meta.get("best_kept") else 3 if newer else 2
    meta = dict(meta, format=FORMAT, format_version=version)
    arrays = {"meta": np.array(json.dumps(meta)), **arrays}
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, _mode_for(path))   # mkstemp makes 0600; keep what the file had, or the umask's
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _mode_for(path):
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def _temp_prefix(path):
    return f".{os.path.basename(path)}.charstream-"


def remove_stale_temps(path):
    """Delete temporary files that interrupted saves of `path` left behind (a `kill -9` mid-save);
    call it only while holding the model's writer lock. Returns how many were removed."""
    path = os.path.realpath(path)
    folder = os.path.dirname(path)
    prefix = _temp_prefix(path)
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        if name.startswith(prefix) and name.endswith(".tmp"):
            try:
                os.unlink(os.path.join(folder, name))
                removed += 1
            except OSError:
                pass
    return removed


def read(path):
    """(meta, arrays) of a model file written by `write`, checked: ModelFileError saying what is
    wrong with anything else. meta's fields are typed and complete (`cell` and `layers` included).

    The archive is read by hand (zipfile, and numpy's .npy header parser): every entry by its exact
    name, each header checked against the shape and dtype the meta implies before its data is read,
    so that no file can make it allocate more than the model it describes (see docs/file-format.md)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileError(f"{path}: no such model file")
    if os.path.isdir(path):
        raise ModelFileError(f"{path}: is a directory, not a model file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
            if magic != b"PK\x03\x04":
                raise ModelFileError(f"{path}: not a charstream model (not an .npz archive)"
                                     + (": the file is empty" if not magic else ""))
            size = os.fstat(f.fileno()).st_size
            f.seek(0)
            with zipfile.ZipFile(f) as z:
                return _read_archive(path, z, size)
    except ModelFileError:
        raise
    except PermissionError:
        raise ModelFileError(f"{path}: permission denied") from None
    except (zipfile.BadZipFile, EOFError) as e:   # it starts like a zip archive, but is not a whole one
        raise ModelFileError(f"{path}: corrupt model file (a damaged or truncated archive: {e})") from None
    except OSError as e:
        raise ModelFileError(f"{path}: not a charstream model (unreadable: {e.strerror or e})") from None
    except MemoryError:
        raise ModelFileError(f"{path}: not enough memory to load this model") from None
    except Exception as e:  # ValueError from numpy's header parser, zlib.error, struct.error, ...
        raise ModelFileError(f"{path}: corrupt model file ({type(e).__name__}: {str(e)[:200]})") from None


# Upper bounds on what a file may announce: the largest model `charstream train` makes (its option
# ranges), so every file it writes reads back. docs/file-format.md lists them.
MAX_HIDDEN = 100_000       # hidden_size (H)
MAX_LAYERS = 64            # layers
MAX_SEQ_LENGTH = 1_000_000  # seq_length (T)
MAX_VOCAB = MAX_CODEPOINT  # characters in the vocabulary (V): distinct code points
MAX_TAIL = 1 << 26         # code points of untrained text (in practice less than seq_length + 1)
MAX_LANES = 4096           # rows of the per-lane training state `hlanes`
MAX_META = 1 << 20         # characters of the meta's JSON (a loss history included)
MAX_INFLATED = 256 << 20   # bytes that all compressed entries together may inflate to (charstream never compresses)
MAX_HEADER = 10_000        # bytes of one .npy header (numpy's own default bound)
FLOAT_DTYPES = ("float64", "float32")   # meta "dtype": the dtype of every float array (absent: float64)


def _float_dtype(meta):
    """The dtype of every float array of a model (parameters, optimizer memories, states): its meta's
    "dtype", float64 when absent. ValueError for anything else."""
    name = meta.get("dtype", "float64")
    if name not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(FLOAT_DTYPES)}, got {name!r}"[:200])
    return np.dtype(name)


def entries(meta, V):
    """{name: (dtype, shape)} of every array entry a file with this (checked) meta and V characters
    holds besides `meta`, `vocab` and `tail`: the one table that says which entries are allowed.
    Optional entries are in it exactly when the meta announces them (`lanes`: the per-lane state)."""
    cell, layers, H = meta["cell"], meta["layers"], meta["hidden_size"]
    f, S = _float_dtype(meta), cells.state_size(cell, layers, H)
    table = {}
    for p in cells.params(cell, layers, V, H):
        for slot in ("",) + cells.slots(cell):   # the parameter, then the optimizer's memories of it
            table[slot + p.name] = (f, p.shape)
    table["hprev"] = (f, (S,))
    if "lanes" in meta:
        table["hlanes"] = (f, (meta["lanes"], S))
    if meta.get("best_kept"):   # the plain names hold the best model, these the current one
        for p in cells.params(cell, layers, V, H):
            table[CURRENT + p.name] = (f, p.shape)
        table[CURRENT + "hprev"] = (f, (S,))
    if meta.get("final_kept"):  # the plain names hold the model at the end, these the best validated one
        for p in cells.params(cell, layers, V, H):
            table[VALIDATED + p.name] = (f, p.shape)
        table[VALIDATED + "hprev"] = (f, (S,))
    return table


def _read_archive(path, z, size):
    """(meta, arrays) from an open archive of `size` bytes, each entry checked before it is read."""
    def bad(msg):
        return ModelFileError(f"{path}: corrupt model file ({msg})")

    infos = {}
    for info in z.infolist():
        if info.filename in infos:
            raise bad(f"the entry {info.filename!r} appears twice"[:200])
        infos[info.filename] = info
    if "meta.npy" not in infos:
        raise ModelFileError(f"{path}: not a charstream model (no 'meta' entry)")
    inflated = sum(i.file_size for i in infos.values() if i.compress_type != zipfile.ZIP_STORED)
    if inflated > MAX_INFLATED:   # a small file must not inflate to gigabytes
        raise bad(f"its compressed entries inflate to {inflated:,} bytes; compressed entries may inflate to "
                  f"{MAX_INFLATED:,} bytes in all")
    budget = [MAX_INFLATED]

    def entry(name):
        return _Entry(path, z, infos[name + ".npy"], name, size, budget)

    with entry("meta") as e:
        if e.dtype.hasobject:
            raise ModelFileError(f"{path}: holds pickled objects, which charstream never loads")
        if e.dtype.kind != "U" or e.shape != () or e.dtype.itemsize > 4 * MAX_META:
            raise ModelFileError(f"{path}: not a charstream model (its 'meta' is not a string of at most "
                                 f"{MAX_META:,} characters)")
        text = str(e.read()[()])
    try:
        meta = json.loads(text)
    except Exception:   # RecursionError from deep nesting included
        raise ModelFileError(f"{path}: not a charstream model (unreadable 'meta')") from None
    meta = _checked_meta(path, bad, meta)

    arrays = {}
    for name, top in (("vocab", MAX_VOCAB), ("tail", MAX_TAIL)):
        if name + ".npy" not in infos:
            continue
        with entry(name) as e:
            if e.dtype != np.uint32 or len(e.shape) != 1:
                raise bad(f"{name} must be 1-D uint32, got {e.dtype} {e.shape}")
            if e.shape[0] > top:
                raise bad(f"{name} has {e.shape[0]:,} entries, more than {top:,}")
            arrays[name] = e.read()
    if "vocab" not in arrays:
        raise bad("missing vocab")
    V = len(arrays["vocab"])
    table = entries(meta, V)
    allowed = {n + ".npy" for n in ("meta", "vocab", "tail", *table)}
    unexpected = [n for n in infos if n not in allowed]
    if unexpected:
        shown = ", ".join(repr(n[:60]) for n in unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
        raise bad(f"unexpected entr{'ies' if len(unexpected) > 1 else 'y'} {shown}")
    missing = [n for n in ("tail", *table) if n + ".npy" not in infos]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    for name, (dtype, shape) in table.items():
        with entry(name) as e:
            if e.dtype.hasobject:
                raise ModelFileError(f"{path}: holds pickled objects, which charstream never loads")
            if e.dtype != dtype:
                raise bad(f"{name} must be {dtype}, got {e.dtype}")
            if e.shape != shape:
                raise bad(f"{name} must be {shape}, got {e.shape}")
            arrays[name] = e.read()
    return _checked_arrays(bad, meta, arrays)


class _Entry:
    """One `.npy` entry of a model archive, opened: its zip record checked against the file and its
    header parsed (`dtype`, `shape`); `read()` then reads the data, exactly what the header announces."""

    def __init__(self, path, z, info, name, size, budget):
        def bad(msg):
            return ModelFileError(f"{path}: corrupt model file ({name}: {msg})")
        self.bad, self.info, self.name = bad, info, name
        if info.flag_bits & 0x1:
            raise bad("the entry is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise bad(f"compressed with an unknown method ({info.compress_type})")
        if info.header_offset + info.compress_size > size:
            raise bad("the entry runs past the end of the file: a truncated archive")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise bad("its stored size and its size differ")
        if info.compress_type == zipfile.ZIP_DEFLATED:   # a small file must not inflate to gigabytes
            if info.file_size > budget[0]:
                raise bad(f"it inflates to {info.file_size:,} bytes; compressed entries may inflate to "
                          f"{MAX_INFLATED:,} bytes in all")
            budget[0] -= info.file_size
        self.f = z.open(info)
        try:
            version = np.lib.format.read_magic(self.f)
            if version == (1, 0):
                self.shape, fortran, self.dtype = np.lib.format.read_array_header_1_0(self.f, MAX_HEADER)
            elif version == (2, 0):
                self.shape, fortran, self.dtype = np.lib.format.read_array_header_2_0(self.f, MAX_HEADER)
            else:
                raise bad(f"unsupported .npy version {version[0]}.{version[1]}")
            if fortran and len(self.shape) > 1:
                raise bad("the array is in Fortran order, not C order")
        except BaseException:
            self.f.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def read(self):
        """The array, read straight into its own buffer; nothing past the announced bytes."""
        n = math.prod(self.shape) * self.dtype.itemsize
        if self.info.file_size != self.f.tell() + n:
            raise self.bad(f"the entry holds {self.info.file_size - self.f.tell():,} bytes of data, "
                           f"its header announces {n:,}")
        a = np.empty(self.shape, self.dtype)
        buf = memoryview(a.reshape(-1).view(np.uint8)) if n else memoryview(b"")
        got = 0
        while got < n:
            k = self.f.readinto(buf[got:])
            if not k:
                raise self.bad("the data ends early: a truncated archive")
            got += k
        self.f.read(1)   # reaching the end checks the entry's CRC (zipfile.BadZipFile if it is wrong)
        return a


def _cell_of(meta):
    """(cell, layers) a file's meta announces: version 1 knew only one layer of the rnn."""
    if meta.get("format_version") == 1:
        return "rnn", 1
    return cells.check(meta.get("cell"), meta.get("layers"))


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _checked_meta(path, bad, meta):
    """The meta with its fields typed, in range and complete (an older version's upgraded in memory)."""
    def wrong(msg):
        return ModelFileError(f"{path}: {msg}")

    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise wrong("not a charstream model (wrong format tag)")
    version = meta.get("format_version")
    if not _is_int(version) or version < 1:
        raise bad("no format version")
    if version > FORMAT_VERSION:
        raise wrong(f"written by a newer charstream (format {version}; this one reads up to {FORMAT_VERSION}): "
                    f"upgrade charstream to read it")
    try:
        cell, layers = _cell_of(meta)
        _float_dtype(meta)
    except ValueError as e:
        raise bad(str(e)[:200]) from None
    if layers > MAX_LAYERS:
        raise bad(f"layers is {layers}, more than {MAX_LAYERS}")
    try:
        H, T = meta["hidden_size"], meta["seq_length"]
        lr = meta["learning_rate"]
        chunks, chars_seen = meta["chunks"], meta["chars_seen"]
        chars_trained = meta.get("chars_trained", chunks * T if _is_int(chunks) and _is_int(T) else None)
        smooth = meta["smooth_loss"]
        reset_every = meta.get("reset_every", 0)   # absent before 0.2
        rng_state = meta["rng"]
    except KeyError:
        raise bad("bad 'meta'") from None
    if not all(map(_is_int, (H, T, chunks, chars_seen, chars_trained, reset_every))) \
            or not _is_number(lr) or not (smooth is None or _is_number(smooth)) or not isinstance(rng_state, dict):
        raise bad("bad 'meta'")
    if not (1 <= H <= MAX_HIDDEN and 1 <= T <= MAX_SEQ_LENGTH) or not (lr > 0 and math.isfinite(lr)) \
            or min(chunks, chars_seen, chars_trained, reset_every) < 0:
        raise bad("out-of-range hyperparameters")
    if "v" in cells.slots(cell):
        steps = meta.get("steps")
        if not _is_int(steps) or steps < 0:
            raise bad("bad Adam step count 'steps'")
    if "lanes" in meta or "hlanes" in meta:
        lanes = meta.get("lanes")
        if not _is_int(lanes) or not 1 <= lanes <= MAX_LANES:
            raise bad(f"lanes must be an integer from 1 to {MAX_LANES}")
    for key in ("block", "round_step"):
        if key in meta and (not _is_int(meta[key]) or meta[key] < 0):
            raise bad(f"{key} must be a non-negative integer")
    if meta.get("lanes", 1) > 1 and not (_is_int(meta.get("block")) and _is_int(meta.get("round_step"))
                                         and meta["block"] >= T and meta["round_step"] * T < meta["block"]):
        raise bad("the lanes' block and round_step do not fit together (block >= seq_length > round_step's)")
    _check_validation_meta(bad, meta)
    max_vocab = meta.get("max_vocab")   # absent from older files: the default, or the vocabulary's size
    fixed_vocab = meta.get("fixed_vocab", False)
    if (max_vocab is not None and (not _is_int(max_vocab) or max_vocab < 1)) or not isinstance(fixed_vocab, bool):
        raise bad("bad max_vocab or fixed_vocab")
    smooth = math.nan if smooth is None else float(smooth)
    return dict(meta, cell=cell, layers=layers, hidden_size=H, seq_length=T, learning_rate=float(lr), chunks=chunks,
                chars_seen=chars_seen, chars_trained=chars_trained, smooth_loss=smooth, rng=rng_state,
                reset_every=reset_every, max_vocab=max_vocab, fixed_vocab=fixed_vocab, format_version=version)


def _check_validation_meta(bad, meta):
    """The dropout settings and what validation measured (charstream.validation), when a file has them."""
    d = meta.get("dropout", 0.0)
    if not _is_number(d) or not 0 <= d < 1:
        raise bad("dropout must be a number in [0, 1)")
    key = meta.get("dropout_seed", 0)
    if not _is_int(key) or not 0 <= key < 1 << 63:
        raise bad("dropout_seed must be an integer in [0, 2**63)")
    if not isinstance(meta.get("best_kept", False), bool):
        raise bad("best_kept must be true or false")
    if not isinstance(meta.get("final_kept", False), bool):
        raise bad("final_kept must be true or false")
    if meta.get("final_kept") and not meta.get("best_kept"):
        raise bad("the model at the end is kept without a best validated one")
    s = meta.get("input_lr", 1.0)
    if not _is_number(s) or not 0 < s <= 1000:
        raise bad("input_lr must be a number in (0, 1000]")
    v = meta.get("validation")
    if v is None:
        if meta.get("best_kept"):
            raise bad("a best model is kept without its validation figures")
        return
    if not isinstance(v, dict):
        raise bad("validation must be an object")
    for key in ("count", "since_best", "best_chars", "best_chunks", "chars"):
        if not _is_int(v.get(key)) or v[key] < 0:
            raise bad(f"validation's {key} must be a non-negative integer")
    for key in ("loss", "best_loss", "best_seconds"):
        if not _is_number(v.get(key)) or not math.isfinite(v[key]) or v[key] < 0:
            raise bad(f"validation's {key} must be a finite number >= 0")
    if not isinstance(v.get("text"), str) or len(v["text"]) > 64:
        raise bad("validation's text must be a digest string")
    if meta.get("final_kept"):
        if not _is_number(v.get("final_loss")) or not math.isfinite(v["final_loss"]) or v["final_loss"] < 0:
            raise bad("validation's final_loss must be a finite number >= 0")
        if not _is_int(v.get("final_chars")) or v["final_chars"] < 0:
            raise bad("validation's final_chars must be a non-negative integer")


def _checked_arrays(bad, meta, a):
    """(meta, arrays) once the values hold too: a valid vocabulary, finite floats, non-negative sums
    of squares, code points in the tail."""
    vocab, tail = a["vocab"], a["tail"]
    if len(np.unique(vocab)) != len(vocab) or (vocab >= MAX_CODEPOINT).any():
        raise bad("vocab has repeated or invalid characters")
    try:
        to_text(vocab)
    except UnicodeDecodeError:
        raise bad("vocab is not valid text") from None
    if (tail >= MAX_CODEPOINT).any():
        raise bad("tail must be 1-D uint32 code points")
    for name, x in a.items():
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise bad(f"{name} has NaN or infinite values")
    slots = cells.slots(meta["cell"])   # Adagrad's m and Adam's v sum squares
    squares = "m" if slots == ("m",) else "v"
    for k in cells.names(meta["cell"], meta["layers"]):
        if (a[squares + k] < 0).any():
            raise bad(f"{squares}{k} has a negative sum of squares")
    max_vocab = meta["max_vocab"]
    if max_vocab is None:
        max_vocab = max(DEFAULT_MAX_VOCAB, len(vocab))
    if max_vocab < max(len(vocab), 1):
        raise bad("bad max_vocab or fixed_vocab")
    return dict(meta, max_vocab=max_vocab), a
