"""charstream: learn a character-level RNN, GRU or LSTM from a stream of text and write text back one character at a time."""
import sys as _sys

try:
    from . import _kernel  # noqa: F401 -- the compiled kernel for this CPU, loaded now; no pure-Python fallback
except ImportError as _e:   # a bad CHARSTREAM_ISA, or a broken install: import raises, as any import does
    if _sys.argv and (_sys.argv[0] == "-m" or _sys.argv[0].rsplit("/", 1)[-1] == "charstream"):
        # being started as the command: if nothing catches it, the ImportError prints as one `Error:` line
        _hook = _sys.excepthook
        _sys.excepthook = lambda t, v, tb: (print(f"Error: {v}", file=_sys.stderr) if issubclass(t, ImportError)
                                            else _hook(t, v, tb))
    raise ImportError(str(_e)) from None
from .errors import CharstreamError, CharstreamWarning, ModelFileError, NonFiniteError
from .model import Model
from . import plugins, samplers, sources  # noqa: F401 -- charstream.sources.open_source(...) after `import charstream`
from .trainer import Record, Trainer
from .training import Options, Summary, train
from .progress import Report
from .facts import facts

load = Model.load

__version__ = "0.2.0"
__all__ = ["Model", "Trainer", "Record", "load", "train", "Options", "Summary", "Report", "facts",
           "CharstreamError", "CharstreamWarning", "ModelFileError", "NonFiniteError"]
