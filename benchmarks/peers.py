"""The benchmark's peers: min-char-rnn's math written as the best numpy we could, and PyTorch's nn.RNN.

Both train like charstream (chunks of T, hidden state carried, clipped Adagrad, lr 0.1) and sample one
character at a time; they exist to be timed, tests/oracle.py is the reference for correctness.
"""
import numpy as np

from charstream.cells import names

PARAM_NAMES = names("rnn", 1)


def numpy_train(params, idx, T=25, lr=0.1):
    """min-char-rnn with every product that the recurrence allows done for the whole chunk: gathers for
    `Wxh x`, the chunk's logits as one matmul, batched dWhy/dWhh, one flat Adagrad over all parameters."""
    flat = np.concatenate([params[k].ravel() for k in PARAM_NAMES])
    sizes = np.cumsum([0] + [params[k].size for k in PARAM_NAMES])
    p = {k: flat[a:b].reshape(params[k].shape) for k, a, b in zip(PARAM_NAMES, sizes[:-1], sizes[1:])}
    gflat, mflat = np.zeros_like(flat), np.zeros_like(flat)
    g = {k: gflat[a:b].reshape(params[k].shape) for k, a, b in zip(PARAM_NAMES, sizes[:-1], sizes[1:])}
    Wxh, Whh, Why, bh, by = (p[k] for k in PARAM_NAMES)
    H = bh.shape[0]
    hprev, s, rows = np.zeros(H), 0, np.arange(T)
    hs, dhraw = np.empty((T + 1, H)), np.empty((T, H))
    while s + T + 1 <= len(idx):
        xs, ys = idx[s:s + T], idx[s + 1:s + T + 1]
        hs[0] = hprev
        xw = Wxh.T[xs] + bh                                   # (T, H) gather of Wxh[:, x_t]
        for t in range(T):
            hs[t + 1] = np.tanh(xw[t] + Whh @ hs[t])
        Y = hs[1:] @ Why.T + by                               # (T, V)
        Y -= Y.max(axis=1, keepdims=True)
        P = np.exp(Y)
        P /= P.sum(axis=1, keepdims=True)
        loss = -np.log(P[rows, ys]).sum()
        P[rows, ys] -= 1.0                                    # dY
        np.matmul(P.T, hs[1:], out=g["Why"])
        P.sum(axis=0, out=g["by"])
        dH = P @ Why                                          # (T, H)
        dhnext = np.zeros(H)
        for t in reversed(range(T)):
            dhraw[t] = (1.0 - hs[t + 1] * hs[t + 1]) * (dH[t] + dhnext)
            dhnext = dhraw[t] @ Whh
        np.matmul(dhraw.T, hs[:-1], out=g["Whh"])
        dhraw.sum(axis=0, out=g["bh"])
        g["Wxh"][:] = 0.0
        np.add.at(g["Wxh"].T, xs, dhraw)
        np.clip(gflat, -5, 5, out=gflat)
        mflat += gflat * gflat
        flat += -lr * gflat / np.sqrt(mflat + 1e-8)
        hprev = hs[T].copy()
        s += T
    return loss


def numpy_sample(params, h, ix, n, rng):
    """The sampling loop with a precomputed column gather and uniforms, and a cumsum/searchsorted draw."""
    Wxh, Whh, Why, bh, by = (params[k] for k in PARAM_NAMES)
    WxhT = np.ascontiguousarray(Wxh.T) + bh
    u = rng.random(n)
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        h = np.tanh(WxhT[ix] + Whh @ h)
        y = Why @ h + by
        c = np.cumsum(np.exp(y - y.max()))
        ix = int(np.searchsorted(c, u[i] * c[-1], side="right"))
        out[i] = ix
    return out


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _torch_model(params, torch):
    """nn.RNN (tanh, batch 1, float64) and a Linear head holding the same weights as `params`."""
    Wxh, Whh, Why, bh, by = (params[k] for k in PARAM_NAMES)
    H, V = Wxh.shape
    rnn = torch.nn.RNN(V, H, nonlinearity="tanh", dtype=torch.float64)
    head = torch.nn.Linear(H, V, dtype=torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(Wxh))
        rnn.weight_hh_l0.copy_(torch.from_numpy(Whh))
        rnn.bias_ih_l0.copy_(torch.from_numpy(bh))
        rnn.bias_hh_l0.zero_()
        head.weight.copy_(torch.from_numpy(Why))
        head.bias.copy_(torch.from_numpy(by))
    return rnn, head


def torch_train(params, idx, T=25, lr=0.1):
    """The same math in PyTorch: one-hot inputs through nn.RNN, summed cross-entropy, grads clamped
    to [-5, 5], torch.optim.Adagrad (its eps sits outside the sqrt, a negligible difference)."""
    import torch
    rnn, head = _torch_model(params, torch)
    V, H = rnn.input_size, rnn.hidden_size
    opt = torch.optim.Adagrad(list(rnn.parameters()) + list(head.parameters()), lr=lr, eps=1e-8)
    eye = torch.eye(V, dtype=torch.float64)
    x_all, y_all = torch.from_numpy(np.asarray(idx, dtype=np.int64)), None
    hprev = torch.zeros(1, 1, H, dtype=torch.float64)
    s, loss = 0, None
    while s + T + 1 <= len(idx):
        x = eye[x_all[s:s + T]].unsqueeze(1)                  # (T, 1, V)
        y_all = x_all[s + 1:s + T + 1]
        out, h = rnn(x, hprev)
        loss = torch.nn.functional.cross_entropy(head(out.squeeze(1)), y_all, reduction="sum")
        opt.zero_grad()
        loss.backward()
        for q in opt.param_groups[0]["params"]:
            q.grad.clamp_(-5, 5)
        opt.step()
        hprev = h.detach()
        s += T
    return float(loss.detach())


def torch_sample(params, ix, n, seed=0):
    """One step of nn.RNN and the head per character, drawn with torch.multinomial."""
    import torch
    rnn, head = _torch_model(params, torch)
    V, H = rnn.input_size, rnn.hidden_size
    eye = torch.eye(V, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    h = torch.zeros(1, 1, H, dtype=torch.float64)
    out = []
    with torch.no_grad():
        for _ in range(n):
            o, h = rnn(eye[ix].view(1, 1, V), h)
            ix = int(torch.multinomial(torch.softmax(head(o.view(1, H)), dim=1)[0], 1, generator=g))
            out.append(ix)
    return out
