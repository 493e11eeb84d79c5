"""The numpy oracle: min-char-rnn's math written the gist's way (one-hot vectors, np.dot per step)."""
import numpy as np


def loss_fun(p, inputs, targets, hprev):
    """min-char-rnn's lossFun: returns loss, dWxh, dWhh, dWhy, dbh, dby, last hidden state."""
    Wxh, Whh, Why, bh, by = (p[k] for k in ("Wxh", "Whh", "Why", "bh", "by"))
    V = Why.shape[0]
    bh, by = bh.reshape(-1, 1), by.reshape(-1, 1)
    xs, hs, ys, ps = {}, {}, {}, {}
    hs[-1] = np.copy(hprev).reshape(-1, 1)
    loss = 0.0
    for t in range(len(inputs)):
        xs[t] = np.zeros((V, 1))
        xs[t][inputs[t]] = 1
        hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t - 1]) + bh)
        ys[t] = np.dot(Why, hs[t]) + by
        ps[t] = np.exp(ys[t]) / np.sum(np.exp(ys[t]))
        loss += -np.log(ps[t][targets[t], 0])
    dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
    dbh, dby = np.zeros_like(bh), np.zeros_like(by)
    dhnext = np.zeros_like(hs[0])
    for t in reversed(range(len(inputs))):
        dy = np.copy(ps[t])
        dy[targets[t]] -= 1
        dWhy += np.dot(dy, hs[t].T)
        dby += dy
        dh = np.dot(Why.T, dy) + dhnext
        dhraw = (1 - hs[t] * hs[t]) * dh
        dbh += dhraw
        dWxh += np.dot(dhraw, xs[t].T)
        dWhh += np.dot(dhraw, hs[t - 1].T)
        dhnext = np.dot(Whh.T, dhraw)
    grads = {"Wxh": dWxh, "Whh": dWhh, "Why": dWhy, "bh": dbh.ravel(), "by": dby.ravel()}
    return loss, grads, hs[len(inputs) - 1].ravel()


def adagrad(p, grads, mem, lr=0.1):
    """min-char-rnn's clipped Adagrad step, in place."""
    for k in p:
        d = np.clip(grads[k], -5, 5)
        mem[k] += d * d
        p[k] += -lr * d / np.sqrt(mem[k] + 1e-8)


def train(p, mem, idx, T=25, lr=0.1, hprev=None, chunks=None):
    """Walk idx as min-char-rnn does (no wrap-around); return the per-chunk losses and hprev."""
    H = p["Whh"].shape[0]
    hprev = np.zeros(H) if hprev is None else hprev
    losses, s = [], 0
    while s + T + 1 <= len(idx) and (chunks is None or len(losses) < chunks):
        loss, grads, hprev = loss_fun(p, idx[s:s + T], idx[s + 1:s + T + 1], hprev)
        adagrad(p, grads, mem, lr)
        losses.append(loss)
        s += T
    return losses, hprev


def sample(p, h, seed_ix, n, rng):
    """min-char-rnn's sample loop with np.random.choice: n indices after seed_ix."""
    Wxh, Whh, Why, bh, by = (p[k] for k in ("Wxh", "Whh", "Why", "bh", "by"))
    V = Why.shape[0]
    h = h.reshape(-1, 1)
    x = np.zeros((V, 1))
    x[seed_ix] = 1
    ixes = []
    for _ in range(n):
        h = np.tanh(np.dot(Wxh, x) + np.dot(Whh, h) + bh.reshape(-1, 1))
        y = np.dot(Why, h) + by.reshape(-1, 1)
        pr = np.exp(y) / np.sum(np.exp(y))
        ix = rng.choice(range(V), p=pr.ravel())
        x = np.zeros((V, 1))
        x[ix] = 1
        ixes.append(ix)
    return ixes
