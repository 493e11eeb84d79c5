"""Each cell's table of parameters (names, shapes, the axis that grows with the vocabulary, how they
start) and its state layout: the one place the model, the store and the tests read them from.

A model is `layers` layers of one cell over a one-hot input of V characters, and one softmax head:

| name (layer l)        | shape            | grows with V | starts as      |
|-----------------------|------------------|--------------|----------------|
| `Wxh` (l=0), `Wxh{l}` | (G*H, V) / (G*H, H) | axis 1, layer 0 only | randn * 0.01 |
| `Whh`, `Whh{l}`       | (G*H, H)         | no           | randn * 0.01   |
| `Why`                 | (V, H)           | axis 0       | randn * 0.01   |
| `bh`, `bh{l}`         | (G*H,)           | no           | 0              |
| `by`                  | (V,)             | axis 0       | 0              |

G is the number of gate blocks stacked in the rows (rnn 1, gru 3, lstm 4). With `rnn` and one layer
the table is min-char-rnn's exactly: Wxh (H, V), Whh (H, H), Why (V, H), bh (H,), by (V,), drawn in
that order. The state is `state_size` floats: for each layer its h, and for the LSTM then its c.
"""
from dataclasses import dataclass

import numpy as np

CELLS = ("rnn", "gru", "lstm")
GATES = {"rnn": 1, "gru": 3, "lstm": 4}   # gate blocks of H rows in Wxh, Whh and bh
STATE = {"rnn": 1, "gru": 1, "lstm": 2}   # vectors of H per layer in the state: h (and c)


@dataclass(frozen=True)
class Param:
    """One parameter array of a model."""

    name: str          # key in Model.params, and in the model file
    shape: tuple       # its shape for the model's V and H
    grows: object      # the axis that gets one more slice per new character, or None
    scale: float       # starts as randn * scale (0: zeros); new slices too

    def initial(self, rng):
        """The array a new model starts with, drawn from `rng` when scale is not 0."""
        if self.scale:
            return rng.standard_normal(self.shape) * self.scale
        return np.zeros(self.shape)


def check(cell, layers):
    """(cell, layers) if they name a model charstream can build, else ValueError saying why."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r} (known: {', '.join(CELLS)})")
    if isinstance(layers, bool) or not isinstance(layers, (int, np.integer)) or layers < 1:
        raise ValueError(f"layers must be a positive integer, got {layers!r}")
    return cell, int(layers)


def layer_name(base, layer):
    """`Wxh`, `Whh`, `bh` for layer 0; `Wxh1`, `Whh1`, `bh1` for layer 1, and so on."""
    return base if layer == 0 else f"{base}{layer}"


def params(cell, layers, V, H):
    """The model's parameters in the order a new model draws them."""
    G = GATES[cell] * H
    table = []
    for l in range(layers):
        table.append(Param(layer_name("Wxh", l), (G, V if l == 0 else H), 1 if l == 0 else None, 0.01))
        table.append(Param(layer_name("Whh", l), (G, H), None, 0.01))
    table.append(Param("Why", (V, H), 0, 0.01))
    table += [Param(layer_name("bh", l), (G,), None, 0.0) for l in range(layers)]
    table.append(Param("by", (V,), 0, 0.0))
    return table


def names(cell, layers):
    """The parameter names, in table order."""
    return tuple(p.name for p in params(cell, layers, 1, 1))


def state_size(cell, layers, H):
    """Floats in the hidden state the model carries from one character to the next."""
    return layers * STATE[cell] * H
