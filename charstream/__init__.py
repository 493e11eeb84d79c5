"""charstream: learn a character-level RNN from a stream of text and write text back one character at a time."""
from . import _kernel  # noqa: F401 -- the compiled kernel for this CPU, loaded now; there is no pure-Python fallback
from .errors import CharstreamError, CharstreamWarning, ModelFileError, NonFiniteError
from .model import Model
from . import plugins, samplers, sources  # noqa: F401 -- charstream.sources.open_source(...) after `import charstream`
from .trainer import Record, Trainer

load = Model.load

__version__ = "0.2.0"
__all__ = ["Model", "Trainer", "Record", "load", "CharstreamError", "CharstreamWarning",
           "ModelFileError", "NonFiniteError"]
