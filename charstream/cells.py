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

G is the number of gate blocks stacked in the rows (rnn 1, gru 3, lstm 4), in PyTorch's order, with
a = Wxh x + bh (x one-hot for layer 0, the layer below's h otherwise) and w = Whh hprev:

    rnn   h = tanh(a + w)
    gru   r, z, n:  r = sigmoid(a_r + w_r), z = sigmoid(a_z + w_z), n = tanh(a_n + r * w_n),
                    h = (1 - z) * n + z * hprev            (one bias: on the input side of n)
    lstm  i, f, g, o: i, f, o = sigmoid(a + w), g = tanh(a_g + w_g),
                    c = f * cprev + i * g,  h = o * tanh(c)

With `rnn` and one layer the table is min-char-rnn's exactly: Wxh (H, V), Whh (H, H), Why (V, H),
bh (H,), by (V,), drawn randn * 0.01 in that order. The gated cells start their weight matrices at
randn / sqrt(H) (Wxh of layer 0: randn * 0.3) and the LSTM's forget-gate bias at 1. The state is
`state_size` floats: for each layer its h, and for the LSTM then its c. The optimizer's memories are
shaped like the parameters: one per parameter for Adagrad (`m` + name in the file), two for Adam
(`m` + name, `v` + name, and the step count in the meta). docs/cells.md has the whole design.
"""
from dataclasses import dataclass

import numpy as np

CELLS = ("rnn", "gru", "lstm")
GATES = {"rnn": 1, "gru": 3, "lstm": 4}   # gate blocks of H rows in Wxh, Whh and bh
STATE = {"rnn": 1, "gru": 1, "lstm": 2}   # vectors of H per layer in the state: h (and c)
OPTIMIZER = {"rnn": "adagrad", "gru": "adam", "lstm": "adam"}
# Adam moves each weight about lr per step, so a one-hot input's weights (one column per character)
# learn far slower than an embedding's would: their step is INPUT_LR * lr. Measured against PyTorch's
# recipe from the same start (lstm 2x256, 32 lanes, 200 updates): 2.566 nats/char at 1, 1.995 at 30,
# 1.947 at 30 with Wxh starting at randn * 0.3, 1.956 at 100; PyTorch's embedding 1.876.
INPUT_LR = 30.0
SLOTS = {"adagrad": ("m",), "adam": ("m", "v")}   # the optimizer's memories, by file-name prefix


@dataclass(frozen=True)
class Defaults:
    """What a new model of a cell starts with, when the command line or caller leaves it open."""

    hidden_size: int       # H
    seq_length: int        # T
    learning_rate: float   # the optimizer's step size
    anneal: float          # the last fraction of a known budget (--max-seconds, --max-chars) that anneals it
    dtype: str = "float64"  # of a new model made by `charstream train` (Model() itself is float64 unless told)
    lanes: int = 1          # lanes `charstream train` gives a new model on file sources (fewer for a short text:
                            # each lane gets MIN_LANE_CHUNKS chunks a pass); streams train one lane


MIN_LANE_CHUNKS = 8
GATED = Defaults(384, 64, 0.003, 0.5, "float32", 16)   # one recipe for both gated cells, measured for each
DEFAULTS = {"rnn": Defaults(100, 25, 0.1, 0.0), "gru": GATED, "lstm": GATED}
# gru: the lstm's recipe (docs/cells.md): 180 s on a 2-core Zen 1, seeds 0-2, 1.491, 1.501, 1.497 against
# the lstm's 1.504, 1.520, 1.510 on the same machine (a gru step is 3 gate blocks to the lstm's 4: 17,500-
# 18,900 chars/s against 14,300-15,200); on Zen 3, seed 0, 1.479 against 1.742 at H=128, T=25, Adam 0.002,
# float64, one lane (the gru's defaults before).
# lstm: H=384, T=64, 16 lanes, float32, Adam 0.003 annealed over the last half; docs/cells.md and
# docs/quality.md have the runs that chose it (180 s of tiny-shakespeare on 2 cores: H=384 1.479 /
# 1.482 median / worst of 3 seeds, H=320 1.492 and H=256 1.509 / 1.514 with the 6 x 2 product block).
# Before lanes and float32 (H=128, T=25, one lane, float64):
# 180 s on tiny-shakespeare (first 90%), held-out last 10% in nats/char, two runs at a time on 2 cores
# (docs/cells.md has the rest): lstm H=128 Adam 0.002 constant 1.698 / 1.706 (seeds 0, 1); annealed over
# the last half (charstream.schedule, to 1/20) 0.002 1.608, 0.003 1.554 / 1.597 (to 1/10: 1.622, to 1/100:
# 1.606 / 1.581); 0.005 over the last 60% 1.609, 0.004 over all 1.615 (seed 0); T=50 1.811 constant,
# H=192 1.738 constant, 1.547 annealed (5.1M chars against 12M); gru 0.002 annealed 1.637, 0.001 constant 1.768.


@dataclass(frozen=True)
class Param:
    """One parameter array of a model."""

    name: str          # key in Model.params, and in the model file
    shape: tuple       # its shape for the model's V and H
    grows: object      # the axis that gets one more slice per new character, or None
    scale: float       # starts as randn * scale (0: zeros); new slices too
    fill: tuple = ()   # (start, stop, value): rows start:stop then set to value (the forget bias)

    def initial(self, rng):
        """The array a new model starts with, drawn from `rng` when scale is not 0."""
        a = rng.standard_normal(self.shape) * self.scale if self.scale else np.zeros(self.shape)
        if self.fill:
            start, stop, value = self.fill
            a[start:stop] = value
        return a


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
    gated = cell != "rnn"
    w0, w = (0.3, 1 / np.sqrt(H)) if gated else (0.01, 0.01)
    fill = (H, 2 * H, 1.0) if cell == "lstm" else ()   # forget gate open at the start
    table = []
    for l in range(layers):
        table.append(Param(layer_name("Wxh", l), (G, V if l == 0 else H), 1 if l == 0 else None, w0 if l == 0 else w))
        table.append(Param(layer_name("Whh", l), (G, H), None, w))
    table.append(Param("Why", (V, H), 0, 0.01))
    table += [Param(layer_name("bh", l), (G,), None, 0.0, fill) for l in range(layers)]
    table.append(Param("by", (V,), 0, 0.0))
    return table


def names(cell, layers):
    """The parameter names, in table order."""
    return tuple(p.name for p in params(cell, layers, 1, 1))


def slots(cell):
    """The file-name prefixes of the cell's optimizer memories: ("m",) for Adagrad, ("m", "v") for Adam."""
    return SLOTS[OPTIMIZER[cell]]


def state_size(cell, layers, H):
    """Floats in the hidden state the model carries from one character to the next."""
    return layers * STATE[cell] * H
