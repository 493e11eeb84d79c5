"""charstream: learn a character-level RNN from a stream of text and write text back one character at a time."""
import os as _os
import sys as _sys

try:
    from . import _kernel  # noqa: F401 -- the compiled kernel for this CPU, loaded now; no pure-Python fallback
except ImportError as _e:   # a bad CHARSTREAM_ISA, or a broken install: the command says so in one line
    _argv = getattr(_sys, "orig_argv", _sys.argv)
    if _os.path.basename(_sys.argv[0] if _sys.argv else "") == "charstream" or "charstream" in _argv[1:3]:
        _sys.exit(f"Error: {_e}")
    raise
from .errors import CharstreamError, CharstreamWarning, ModelFileError, NonFiniteError
from .model import Model
from . import plugins, samplers, sources  # noqa: F401 -- charstream.sources.open_source(...) after `import charstream`
from .trainer import Record, Trainer

load = Model.load

__version__ = "0.2.0"
__all__ = ["Model", "Trainer", "Record", "load", "CharstreamError", "CharstreamWarning",
           "ModelFileError", "NonFiniteError"]
