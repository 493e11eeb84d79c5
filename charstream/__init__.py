"""charstream: learn a character-level RNN from a stream of text and write text back one character at a time."""
from . import _rnn_step  # the compiled kernel; there is no pure-Python fallback
from .errors import CharstreamError, CharstreamWarning, ModelFileError, NonFiniteError
from .model import Model
from . import plugins, samplers, sources  # charstream.sources.open_source("tcp://...") after `import charstream`
from .store import load
from .trainer import Record, Trainer

__version__ = "0.1.0"
__all__ = ["Model", "Trainer", "Record", "load", "CharstreamError", "CharstreamWarning",
           "ModelFileError", "NonFiniteError"]
