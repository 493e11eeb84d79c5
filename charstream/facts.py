"""The facts about a model that `info`, `info --json`, `/info`, `/v1/models` and the page show, computed in one place."""
import math

import numpy as np

from . import cells
from .scoring import LN2


def facts(model):
    """A JSON-able dict: the model's shape, size, training so far, recent loss, file format and curve."""
    st = model.state
    recent = None if math.isnan(st.smooth_loss) else st.smooth_loss / st.seq_length
    return {
        "cell": model.cell,
        "layers": model.layers,
        "dtype": np.dtype(getattr(model, "dtype", np.float64)).name,   # the parameters' floating-point type
        "hidden_size": model.hidden_size,
        "vocab_size": model.vocab_size,
        "parameters": int(sum(v.size for v in model.params.values())),
        "seq_length": st.seq_length,
        "learning_rate": st.learning_rate,
        "optimizer": cells.OPTIMIZER[model.cell],
        "chars_seen": st.chars_seen,
        "chunks_trained": st.chunks,
        "chars_trained": st.chars_trained,
        "untrained_tail": int(len(st.tail)),
        "recent_nats_per_char": recent,
        "recent_bits_per_char": None if recent is None else recent / LN2,
        "format_version": model.file_format_version,
        "history": [list(p[:3]) for p in model.history.points],   # [chars_trained, nats/char, seconds] (charstream.history)
        "training_seconds": round(model.history.seconds, 3),
        "dropout": getattr(model, "dropout", 0.0),   # the rate the last run trained with
        # the last validation and the best model's (kept: these are its parameters), None without a validation text
        "validation": None if getattr(model, "validation", None) is None else {
            k: model.validation[k] for k in ("loss", "chars", "count", "best_loss", "best_chars", "best_chunks",
                                             "since_best", "unknown", "final_loss", "final_chars") if k in model.validation},
    }
