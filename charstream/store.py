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
FORMAT_VERSION = 3   # 3: float32 models and lanes; 2: meta names the cell and the layers; 1: rnn, one layer
MAX_LANES = 4096     # the most lanes a file may hold states for


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
    meta = dict(meta, format=FORMAT, format_version=FORMAT_VERSION if newer else 2)
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
    wrong with anything else. meta's fields are typed and complete (`cell` and `layers` included)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileError(f"{path}: no such model file")
    if os.path.isdir(path):
        raise ModelFileError(f"{path}: is a directory, not a model file")
    try:
        with open(path, "rb") as f:   # ours to close: np.load(path) leaks its file on a torn archive
            magic = f.read(4)
            if magic != b"PK\x03\x04":
                raise ModelFileError(f"{path}: not a charstream model (not an .npz archive)"
                                     + (": the file is empty" if not magic else ""))
            f.seek(0)
            with np.load(f, allow_pickle=False) as z:
                names = set(z.files)
                if "meta" not in names:
                    raise ModelFileError(f"{path}: not a charstream model (no 'meta' entry)")
                arrays = _read_entries(path, z, names)
    except ModelFileError:
        raise
    except PermissionError:
        raise ModelFileError(f"{path}: permission denied") from None
    except (zipfile.BadZipFile, EOFError) as e:   # it starts like a zip archive, but is not a whole one
        raise ModelFileError(f"{path}: corrupt model file (a damaged or truncated archive: {e})") from None
    except OSError as e:
        raise ModelFileError(f"{path}: not a charstream model (unreadable: {e.strerror or e})") from None
    except ValueError as e:
        if "pickle" in str(e):
            raise ModelFileError(f"{path}: holds pickled objects, which charstream never loads") from None
        raise ModelFileError(f"{path}: corrupt model file ({e})") from None
    except Exception as e:  # zlib.error, KeyError, struct.error from a torn archive
        raise ModelFileError(f"{path}: corrupt model file ({type(e).__name__}: {e})") from None
    return _checked(path, arrays)


def _cell_of(meta):
    """(cell, layers) a file's meta announces: version 1 knew only one layer of the rnn."""
    if meta.get("format_version") == 1:
        return "rnn", 1
    return cells.check(meta.get("cell"), meta.get("layers"))


def _read_entries(path, z, names):
    """The entries a model has, meta first, each read only if its declared size fits the shapes the
    meta announces: a foreign or hostile file cannot make charstream read gigabytes."""
    def read(name, max_items, itemsize=8):
        try:
            size = z.zip.getinfo(name + ".npy").file_size
        except KeyError:
            size = z.zip.getinfo(name).file_size
        if size > max_items * itemsize + 4096:   # the .npy header is a few hundred bytes
            raise ModelFileError(f"{path}: corrupt model file ({name} is larger than the model it belongs to)")
        return z[name]

    a = {"meta": read("meta", 1 << 20, 1)}
    if "vocab" in names:
        a["vocab"] = read("vocab", MAX_CODEPOINT, 4)
    try:
        meta = json.loads(str(a["meta"][()]))
        H = max(0, int(meta["hidden_size"]))
        cell, layers = _cell_of(meta)
        V = a["vocab"].size
    except Exception:   # _checked says what is wrong with the meta; read the rest within a bound
        cell, layers, H, V = "lstm", 4, 1 << 12, 1 << 12
    items = {p.name: int(np.prod(p.shape)) for p in cells.params(cell, layers, V, H)}
    items.update({slot + k: n for k, n in list(items.items()) for slot in cells.slots(cell)},
                 hprev=cells.state_size(cell, layers, H))
    try:
        lanes = int(meta.get("lanes", 1))
    except Exception:
        lanes = 1
    if 1 < lanes <= MAX_LANES:
        items["hlanes"] = lanes * cells.state_size(cell, layers, H)
    for k, n in items.items():
        if k in names:
            a[k] = read(k, n)
    if "tail" in names:
        a["tail"] = read("tail", 1 << 26, 4)   # untrained text: up to a read block's worth, in practice
    return a


def _checked(path, a):
    def bad(msg):
        return ModelFileError(f"{path}: {msg}")

    try:
        meta = json.loads(str(a["meta"][()]))
    except Exception:
        raise bad("not a charstream model (unreadable 'meta')") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise bad("not a charstream model (wrong format tag)")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise bad("corrupt model file (no format version)")
    if version > FORMAT_VERSION:
        raise bad(f"written by a newer charstream (format {version}; this one reads up to {FORMAT_VERSION}): "
                  f"upgrade charstream to read it")
    try:
        cell, layers = _cell_of(meta)
    except ValueError as e:
        raise bad(f"corrupt model file ({e})") from None
    if "vocab" not in a or "hprev" not in a:
        raise bad(f"corrupt model file (missing {', '.join(k for k in ('vocab', 'hprev') if k not in a)})")
    try:
        H = int(meta["hidden_size"])
        T = int(meta["seq_length"])
        lr = float(meta["learning_rate"])
        chunks, chars_seen = int(meta["chunks"]), int(meta["chars_seen"])
        chars_trained = int(meta.get("chars_trained", chunks * T))   # absent before 0.1.0 final
        smooth = math.nan if meta["smooth_loss"] is None else float(meta["smooth_loss"])
        reset_every = meta.get("reset_every", 0)   # absent before 0.2
        rng_state = meta["rng"]
    except (KeyError, TypeError, ValueError):
        raise bad("corrupt model file (bad 'meta')") from None
    if H < 1 or T < 1 or not (lr > 0 and math.isfinite(lr)) or chunks < 0 or chars_seen < 0 or chars_trained < 0 \
            or isinstance(reset_every, bool) or not isinstance(reset_every, int) or reset_every < 0:
        raise bad("corrupt model file (out-of-range hyperparameters)")
    vocab = a["vocab"]
    if vocab.dtype != np.uint32 or vocab.ndim != 1:
        raise bad(f"corrupt model file (vocab must be 1-D uint32, got {vocab.dtype} {vocab.shape})")
    if len(np.unique(vocab)) != len(vocab) or (vocab >= MAX_CODEPOINT).any():
        raise bad("corrupt model file (vocab has repeated or invalid characters)")
    try:
        to_text(vocab)
    except UnicodeDecodeError:
        raise bad("corrupt model file (vocab is not valid text)") from None
    table = cells.params(cell, layers, len(vocab), H)
    slots = cells.slots(cell)   # the optimizer's memories: m (Adagrad's; Adam's first moment), v (Adam's)
    missing = [k for k in ["tail"] + [slot + p.name for slot in ("",) + slots for p in table] if k not in a]
    if missing:
        raise bad(f"corrupt model file (missing {', '.join(missing)})")
    for p in table:
        for name in [p.name] + [slot + p.name for slot in slots]:
            _check_array(bad, name, a[name], p.shape, a[name].dtype if a[name].dtype == np.float32 else None)
        squares = "m" if slots == ("m",) else "v"   # Adagrad's m and Adam's v sum squares
        if (a[squares + p.name] < 0).any():
            raise bad(f"corrupt model file ({squares}{p.name} has a negative sum of squares)")
    if "v" in slots:
        steps = meta.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise bad("corrupt model file (bad Adam step count 'steps')")
    dtype = meta.get("dtype", "float64")
    if dtype not in ("float64", "float32"):
        raise bad(f"corrupt model file (dtype must be float64 or float32, got {dtype!r})")
    for p in table:
        for name in [p.name] + [slot + p.name for slot in slots]:
            if a[name].dtype != dtype:
                raise bad(f"corrupt model file ({name} must be {dtype}, like the model, got {a[name].dtype})")
    _check_array(bad, "hprev", a["hprev"], (cells.state_size(cell, layers, H),), dtype)
    lanes, block, round_step = meta.get("lanes", 1), meta.get("block", 0), meta.get("round_step", 0)
    if any(isinstance(x, bool) or not isinstance(x, int) for x in (lanes, block, round_step)) \
            or not 1 <= lanes <= MAX_LANES or block < 0 or round_step < 0 or (lanes > 1 and block < T) \
            or (lanes > 1 and round_step * T >= block):
        raise bad("corrupt model file (bad lanes, block or round_step)")
    if lanes > 1:
        if "hlanes" not in a:
            raise bad("corrupt model file (missing hlanes)")
        _check_array(bad, "hlanes", a["hlanes"], (lanes, cells.state_size(cell, layers, H)), dtype)
    tail = a["tail"]
    if tail.dtype != np.uint32 or tail.ndim != 1 or (tail >= MAX_CODEPOINT).any():
        raise bad("corrupt model file (tail must be 1-D uint32 code points)")

    max_vocab = meta.get("max_vocab", max(DEFAULT_MAX_VOCAB, len(vocab)))   # absent from older files
    fixed_vocab = meta.get("fixed_vocab", False)
    if isinstance(max_vocab, bool) or not isinstance(max_vocab, int) or max_vocab < max(len(vocab), 1) \
            or not isinstance(fixed_vocab, bool):
        raise bad("corrupt model file (bad max_vocab or fixed_vocab)")
    meta = dict(meta, cell=cell, layers=layers, hidden_size=H, seq_length=T, learning_rate=lr, chunks=chunks,
                chars_seen=chars_seen, chars_trained=chars_trained, smooth_loss=smooth, rng=rng_state, reset_every=reset_every,
                max_vocab=max_vocab, fixed_vocab=fixed_vocab, format_version=version, dtype=dtype, lanes=lanes,
                block=block, round_step=round_step)
    arrays = {k: np.ascontiguousarray(v) for k, v in a.items() if k != "meta"}
    return meta, arrays


def _check_array(bad, name, x, shape, dtype=None):
    dtype = np.dtype(dtype or np.float64)
    if x.dtype != dtype:
        raise bad(f"corrupt model file ({name} must be {dtype.name}, got {x.dtype})")
    if x.shape != shape:
        raise bad(f"corrupt model file ({name} must be {shape}, got {x.shape})")
    if not np.isfinite(x).all():
        raise bad(f"corrupt model file ({name} has NaN or infinite values)")
