"""The model a server answers with: loaded from one file, reloaded when that file changes."""
import os
import sys
import threading

from ..errors import ModelFileError
from ..facts import facts
from ..model import Model


_NONE = object()   # no bad version of the file seen since the last good one


def _signature(path):
    """What tells one version of a file from the next (a rename over it changes the inode), or None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _log(message):
    try:
        print(f"charstream serve: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


class ModelRegistry:
    """The last good model read from `path`; `current()` reloads it first when the file has changed.

    A file that cannot be loaded (corrupt, foreign, gone) leaves the last good model in service and
    logs one line per version of the file. Loaded models are never changed, only replaced, so a
    generation that holds one keeps reading the same arrays while the next request gets the new one.
    """

    def __init__(self, path, log=_log):
        self.path = os.fspath(path)
        self.id = os.path.splitext(os.path.basename(self.path))[0] or "charstream"
        self._log = log
        self._lock = threading.Lock()
        sig = _signature(self.path)
        self.model = Model.load(self.path)   # ModelFileError: the caller says so and exits
        self._good, self._bad = sig, _NONE
        self.created = int(sig[3] // 10**9) if sig else 0
        self.reloads = 0

    def unchanged(self):
        """The model in service if its file has not changed since (a stat, cheap enough for the event
        loop), else None: then `current()`, which may load, belongs on a worker thread."""
        sig = _signature(self.path)
        return self.model if sig == self._good or sig == self._bad else None

    def current(self):
        """The model to use now (a stat per call; a load only when the file changed)."""
        model = self.unchanged()
        if model is not None:
            return model
        sig = _signature(self.path)
        with self._lock:    # one thread loads; the others wait and take its result
            if sig == self._good or sig == self._bad:
                return self.model
            try:
                model = Model.load(self.path)
            except Exception as e:   # ModelFileError, and whatever else a hostile file could cause
                self._bad = sig
                what = str(e).splitlines()[0] if isinstance(e, ModelFileError) and str(e) else f"{self.path}: {type(e).__name__}"
                self._log(f"{what}; still serving the last good model")
                return self.model
            self.model, self._good, self._bad = model, sig, _NONE
            self.created = int(sig[3] // 10**9) if sig else self.created
            self.reloads += 1
            self._log(f"reloaded {self.path} ({model.state.chars_trained:,} characters trained)")
            return model

    def facts(self, model=None):
        """What the page and `GET /info` show about a model (the current one by default): its facts
        (charstream.facts, as `charstream info --json` has them) and the server's."""
        m = self.current() if model is None else model
        return {"id": self.id, "file": os.path.basename(self.path),   # its name, never where it is
                **facts(m), "created": self.created, "reloads": self.reloads}
