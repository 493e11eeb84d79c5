"""The numpy oracle of the cells: layers of rnn, gru or lstm written plainly, one step and one layer at a
time, with the gate order and formulas of charstream/cells.py (PyTorch's order)."""
import numpy as np

from charstream import cells


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _layer_params(p, l):
    n = cells.layer_name
    return p[n("Wxh", l)], p[n("Whh", l)], p[n("bh", l)]


def step(cell, Wxh, Whh, bh, x, h, c):
    """One step of one layer from input vector x and state (h, c): (h, c, cache for the backward)."""
    H = Whh.shape[1]
    a = Wxh @ x + bh
    w = Whh @ h
    if cell == "rnn":
        hn = np.tanh(a + w)
        return hn, c, (hn,)
    if cell == "gru":
        r = sigmoid(a[:H] + w[:H])
        z = sigmoid(a[H:2 * H] + w[H:2 * H])
        n = np.tanh(a[2 * H:] + r * w[2 * H:])
        hn = (1 - z) * n + z * h
        return hn, c, (r, z, n, w[2 * H:])
    i = sigmoid(a[:H] + w[:H])
    f = sigmoid(a[H:2 * H] + w[H:2 * H])
    g = np.tanh(a[2 * H:3 * H] + w[2 * H:3 * H])
    o = sigmoid(a[3 * H:] + w[3 * H:])
    cn = f * c + i * g
    hn = o * np.tanh(cn)
    return hn, cn, (i, f, g, o, np.tanh(cn))


def step_back(cell, Whh, cache, h, c, dh, dc):
    """The backward of `step`: (d(Wxh x + bh), d(Whh h), dL/dh direct, dL/dc) for dh, dc of its output."""
    if cell == "rnn":
        (hn,) = cache
        da = (1 - hn * hn) * dh
        return da, da, np.zeros_like(h), dc
    if cell == "gru":
        r, z, n, wn = cache
        dn = dh * (1 - z) * (1 - n * n)
        dr = dn * wn * r * (1 - r)
        dz = dh * (h - n) * z * (1 - z)
        da = np.concatenate([dr, dz, dn])
        dw = np.concatenate([dr, dz, dn * r])
        return da, dw, dh * z, dc
    i, f, g, o, tc = cache
    dct = dc + dh * o * (1 - tc * tc)
    da = np.concatenate([dct * g * i * (1 - i), dct * c * f * (1 - f), dct * i * (1 - g * g),
                         dh * tc * o * (1 - o)])
    return da, da, np.zeros_like(h), dct * f


def split(cell, layers, H, state):
    """The flat state as [(h, c)] per layer (c is None but for the LSTM)."""
    S = cells.STATE[cell]
    out = []
    for l in range(layers):
        s = state[l * S * H:(l + 1) * S * H]
        out.append((s[:H].copy(), s[H:2 * H].copy() if cell == "lstm" else np.zeros(H, dtype=state.dtype)))
    return out


def join(cell, states):
    return np.concatenate([np.concatenate([h, c]) if cell == "lstm" else h for h, c in states])


def loss_fun(cell, layers, p, inputs, targets, state, masks=None):
    """Summed cross-entropy, gradients (keyed like p) and the last flat state, in p's dtype (float32
    arrays give the float32 oracle). `masks` (layers, n, H): dropout's multipliers of each layer's
    output h_t where the layer above and the head read it (the recurrence reads h_t itself)."""
    V, H = p["Why"].shape
    keep = (lambda l, t, h: h) if masks is None else (lambda l, t, h: h * masks[l][t])
    st = split(cell, layers, H, state)
    caches, ins, hs, cs, ps = [], [], [], [], []
    loss = 0.0
    for t in range(len(inputs)):
        x = np.zeros(V, dtype=p["Why"].dtype)
        x[inputs[t]] = 1
        layer_in, row = x, []
        for l in range(layers):
            h, c = st[l]
            hn, cn, cache = step(cell, *_layer_params(p, l), layer_in, h, c)
            row.append((layer_in, h, c, cache))
            st[l] = (hn, cn)
            layer_in = keep(l, t, hn)
        caches.append(row)
        y = p["Why"] @ layer_in + p["by"]
        e = np.exp(y - y.max())
        ps.append(e / e.sum())
        hs.append(layer_in)
        loss += -np.log(ps[-1][targets[t]])
    g = {k: np.zeros_like(v) for k, v in p.items()}
    dhnext = [np.zeros(H, dtype=p["Why"].dtype) for _ in range(layers)]
    dcnext = [np.zeros(H, dtype=p["Why"].dtype) for _ in range(layers)]
    for t in reversed(range(len(inputs))):
        dy = ps[t].copy()
        dy[targets[t]] -= 1
        g["Why"] += np.outer(dy, hs[t])
        g["by"] += dy
        dh = keep(layers - 1, t, p["Why"].T @ dy)
        for l in reversed(range(layers)):
            layer_in, h, c, cache = caches[t][l]
            Wxh, Whh, _ = _layer_params(p, l)
            da, dw, dhp, dc = step_back(cell, Whh, cache, h, c, dh + dhnext[l], dcnext[l])
            n = cells.layer_name
            g[n("Wxh", l)] += np.outer(da, layer_in)
            g[n("Whh", l)] += np.outer(dw, h)
            g[n("bh", l)] += da
            dhnext[l] = Whh.T @ dw + dhp
            dcnext[l] = dc
            dh = keep(l - 1, t, Wxh.T @ da) if l > 0 else None
    return loss, g, join(cell, st)


def adagrad(p, grads, mem, lr):
    for k in p:
        d = np.clip(grads[k], -5, 5)
        mem[k] += d * d
        p[k] += -lr * d / np.sqrt(mem[k] + 1e-8)


def adam(p, grads, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-8, clip=5.0, input_lr=1.0):
    """One Adam step (step number t, from 1) on gradients clipped to [-clip, clip], in place; Wxh (the
    one-hot input's weights) steps input_lr * lr."""
    for k in p:
        d = np.clip(grads[k], -clip, clip)
        m[k] = b1 * m[k] + (1 - b1) * d
        v[k] = b2 * v[k] + (1 - b2) * d * d
        v[k][v[k] < 1e-30] = 0.0
        p[k] -= (lr * input_lr if k == "Wxh" else lr) * (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps)


def update(optimizer, p, grads, m, v, t, lr, n, input_lr=1.0):
    """The optimizer's step t (from 1) on gradients summed over n steps: Adam with moments m, v and
    the gradients clipped to 5 per step, or Adagrad with memory m (min-char-rnn's clip to [-5, 5])."""
    if optimizer == "adam":
        adam(p, grads, m, v, t, lr, clip=5.0 * n, input_lr=input_lr)
    else:
        adagrad(p, grads, m, lr)


def evaluate(cell, layers, p, xs, state):
    """Summed -log p of xs[1:] stepping the state through xs[:-1]; (loss, last state)."""
    V, H = p["Why"].shape
    st = split(cell, layers, H, state)
    loss = 0.0
    for t in range(len(xs) - 1):
        st = advance(cell, layers, p, st, xs[t])
        y = p["Why"] @ st[-1][0] + p["by"]
        loss += np.log(np.exp(y - y.max()).sum()) + y.max() - y[xs[t + 1]]
    return loss, join(cell, st)


def advance(cell, layers, p, st, ix):
    """Every layer one step on input index ix."""
    V = p["Why"].shape[0]
    x = np.zeros(V, dtype=p["Why"].dtype)
    x[ix] = 1
    out = []
    for l in range(layers):
        h, c = st[l]
        hn, cn, _ = step(cell, *_layer_params(p, l), x, h, c)
        out.append((hn, cn))
        x = hn
    return out


M64 = (1 << 64) - 1


def splitmix64(z):
    """splitmix64's output of z + the golden gamma, on Python ints (ext/lanes.h, cs_splitmix64)."""
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def drop_masks(seed, step, rate, layers, T, B, H, n, dtype):
    """Dropout's multipliers (B, layers, n, H) of one update, as LaneKernel draws them: unit i of lane
    b's output of layer l at step t is 1/(1-rate) when splitmix64(key + ((l*T + t)*B + b)*H + i) >> 11
    < (1-rate) * 2**53, key = splitmix64(seed ^ splitmix64(step)), else 0. T is the kernel's."""
    key = splitmix64(seed ^ splitmix64(step))
    bits = int((1.0 - rate) * 2.0 ** 53)
    scale = np.asarray(1.0 / (1.0 - rate)).astype(dtype)
    out = np.zeros((B, layers, n, H), dtype=dtype)
    for b in range(B):
        for l in range(layers):
            for t in range(n):
                base = key + ((l * T + t) * B + b) * H
                for i in range(H):
                    if splitmix64((base + i) & M64) >> 11 < bits:
                        out[b, l, t, i] = scale
    return out


def loss_fun_lanes(cell, layers, p, xs, states, masks=None):
    """The lanes' summed loss, their mean gradient and last states: `loss_fun` on each row of xs
    (B, n+1) from each row of states (B, S), with lane b's dropout masks[b] (drop_masks) if given."""
    loss, total, out = 0.0, None, []
    for b in range(len(xs)):
        lb, g, st = loss_fun(cell, layers, p, xs[b, :-1], xs[b, 1:], states[b],
                             None if masks is None else masks[b])
        loss += lb
        total = g if total is None else {k: total[k] + g[k] for k in g}
        out.append(st)
    return loss, {k: v / len(xs) for k, v in total.items()}, np.stack(out)
