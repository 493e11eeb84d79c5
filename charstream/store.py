"""Model files: one `.npz` of plain arrays (never pickles), written atomically and validated on load."""
import json
import math
import os
import stat
import tempfile
import zipfile

import numpy as np

from .errors import ModelFileError
from .model import PARAM_NAMES, Model, TrainState
from .vocab import DEFAULT_MAX_VOCAB, MAX_CODEPOINT, Vocab, to_text

FORMAT = "charstream-model"
FORMAT_VERSION = 1


def save(model, path):
    """Write `model` to `path` via a temporary file in the same folder, fsync'd, then renamed over it:
    a crash at any moment leaves either the old file or the new one."""
    path = os.path.realpath(path)   # through a symlink: replace its target, keep the link
    arrays = _to_arrays(model)
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


def _to_arrays(model):
    st = model.state
    for k, v in list(model.params.items()) + list(st.mem.items()) + [("hprev", st.hprev)]:
        if not np.isfinite(v).all():
            raise ModelFileError(f"refusing to save: {k} has NaN or infinite values")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hidden_size": model.hidden_size,
        "seq_length": st.seq_length,
        "learning_rate": st.learning_rate,
        "chunks": st.chunks,
        "chars_seen": st.chars_seen,
        "chars_trained": st.chars_trained,
        "smooth_loss": None if math.isnan(st.smooth_loss) else st.smooth_loss,
        "rng": model.rng.bit_generator.state,
        "max_vocab": model.max_vocab,
        "fixed_vocab": model.fixed_vocab,
    }
    arrays = {"meta": np.array(json.dumps(meta)),
              "vocab": np.array([ord(c) for c in model.vocab], dtype=np.uint32),
              "hprev": st.hprev, "tail": np.asarray(st.tail, dtype=np.uint32)}
    for k in PARAM_NAMES:
        arrays[k] = model.params[k]
        arrays["m" + k] = st.mem[k]
    return arrays


def load(path):
    """Read a model written by `save`; raise ModelFileError saying what is wrong with anything else."""
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
        with np.load(path, allow_pickle=False) as z:
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
    return _from_arrays(path, arrays)


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
        H = max(0, int(json.loads(str(a["meta"][()]))["hidden_size"]))
        V = a["vocab"].size
    except Exception:   # _from_arrays says what is wrong with the meta; read the rest within a bound
        H = V = 1 << 12
    items = {"Wxh": H * V, "Whh": H * H, "Why": V * H, "bh": H, "by": V}
    items.update({"m" + k: n for k, n in list(items.items())}, hprev=H)
    for k, n in items.items():
        if k in names:
            a[k] = read(k, n)
    if "tail" in names:
        a["tail"] = read("tail", 1 << 26, 4)   # untrained text: up to a read block's worth, in practice
    return a


def _from_arrays(path, a):
    def bad(msg):
        return ModelFileError(f"{path}: {msg}")

    try:
        meta = json.loads(str(a["meta"][()]))
    except Exception:
        raise bad("not a charstream model (unreadable 'meta')") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise bad("not a charstream model (wrong format tag)")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise bad("corrupt model file (no format version)")
    if version > FORMAT_VERSION:
        raise bad(f"written by a newer charstream (format {version}; this one reads up to {FORMAT_VERSION})")
    missing = [k for k in ("vocab", "hprev", "tail") + PARAM_NAMES + tuple("m" + k for k in PARAM_NAMES)
               if k not in a]
    if missing:
        raise bad(f"corrupt model file (missing {', '.join(missing)})")
    try:
        H = int(meta["hidden_size"])
        T = int(meta["seq_length"])
        lr = float(meta["learning_rate"])
        chunks, chars_seen = int(meta["chunks"]), int(meta["chars_seen"])
        chars_trained = int(meta.get("chars_trained", chunks * T))   # absent before 0.1.0 final
        smooth = math.nan if meta["smooth_loss"] is None else float(meta["smooth_loss"])
        rng_state = meta["rng"]
    except (KeyError, TypeError, ValueError):
        raise bad("corrupt model file (bad 'meta')") from None
    if H < 1 or T < 1 or not (lr > 0 and math.isfinite(lr)) or chunks < 0 or chars_seen < 0 or chars_trained < 0:
        raise bad("corrupt model file (out-of-range hyperparameters)")
    vocab = a["vocab"]
    if vocab.dtype != np.uint32 or vocab.ndim != 1:
        raise bad(f"corrupt model file (vocab must be 1-D uint32, got {vocab.dtype} {vocab.shape})")
    if len(np.unique(vocab)) != len(vocab) or (vocab >= MAX_CODEPOINT).any():
        raise bad("corrupt model file (vocab has repeated or invalid characters)")
    V = len(vocab)
    shapes = {"Wxh": (H, V), "Whh": (H, H), "Why": (V, H), "bh": (H,), "by": (V,)}
    for k, shape in shapes.items():
        for name in (k, "m" + k):
            _check_array(bad, name, a[name], shape)
    _check_array(bad, "hprev", a["hprev"], (H,))
    tail = a["tail"]
    if tail.dtype != np.uint32 or tail.ndim != 1 or (tail >= MAX_CODEPOINT).any():
        raise bad("corrupt model file (tail must be 1-D uint32 code points)")
    for k in PARAM_NAMES:
        if (a["m" + k] < 0).any():
            raise bad(f"corrupt model file (m{k} has negative Adagrad memory)")

    max_vocab = meta.get("max_vocab", max(DEFAULT_MAX_VOCAB, V))   # absent from older files
    fixed_vocab = meta.get("fixed_vocab", False)
    if isinstance(max_vocab, bool) or not isinstance(max_vocab, int) or max_vocab < max(V, 1) \
            or not isinstance(fixed_vocab, bool):
        raise bad("corrupt model file (bad max_vocab or fixed_vocab)")

    model = Model.__new__(Model)
    try:
        model._vocab = Vocab(list(to_text(vocab)), max_vocab, fixed_vocab)
    except (UnicodeDecodeError, ValueError):
        raise bad("corrupt model file (vocab is not valid text)") from None
    model.rng = np.random.default_rng(0)   # its state is set from the file next
    try:
        model.rng.bit_generator.state = rng_state
    except Exception:
        raise bad("corrupt model file (bad random generator state)") from None
    model.params = {k: np.ascontiguousarray(a[k]) for k in PARAM_NAMES}
    model.state = TrainState(mem={k: np.ascontiguousarray(a["m" + k]) for k in PARAM_NAMES},
                             hprev=np.ascontiguousarray(a["hprev"]), tail=tail.copy(), seq_length=T,
                             learning_rate=lr, chunks=chunks, chars_seen=chars_seen,
                             chars_trained=chars_trained, smooth_loss=smooth)
    return model


def _check_array(bad, name, x, shape):
    if x.dtype != np.float64:
        raise bad(f"corrupt model file ({name} must be float64, got {x.dtype})")
    if x.shape != shape:
        raise bad(f"corrupt model file ({name} must be {shape}, got {x.shape})")
    if not np.isfinite(x).all():
        raise bad(f"corrupt model file ({name} has NaN or infinite values)")
