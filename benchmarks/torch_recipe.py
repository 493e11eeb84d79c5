"""PyTorch's best CPU recipe for a char-LSTM, the peer the quality goal is measured against.

    /path/to/torch-venv/bin/python benchmarks/torch_recipe.py --train train.txt --held held.txt \
        [--seconds 180] [--seeds 0,1,2] [--threads 2] [--hidden 256] [--layers 2] [--batch 32] [--dropout 0]

nn.Embedding(V, 64) -> nn.LSTM(64, H, layers) -> nn.Linear(H, V), float32, batch B of contiguous
regions of the training text (torch-rnn's split), sequences of 64 with the hidden state carried,
Adam 2e-3 held for the first half of the time budget and annealed linearly to zero over the second,
gradient norm clipped at 5. The held-out text is scored in one pass with the state carried, as
`charstream eval` scores it. Prints each seed's nats/char and chars/s, then the median and the worst.
"""
import argparse
import math
import statistics
import time

import numpy as np


def run(torch, train, held, seed, seconds, H, layers, B, T, lr, dropout):
    """Train one model for `seconds` of wall clock; return (held-out nats/char, chars trained/s)."""
    torch.manual_seed(seed)
    vocab = sorted(set(train))
    ix = {c: i for i, c in enumerate(vocab)}
    V = len(vocab)
    data = torch.tensor([ix[c] for c in train], dtype=torch.int64)
    emb = torch.nn.Embedding(V, 64)
    rnn = torch.nn.LSTM(64, H, layers, dropout=dropout if layers > 1 else 0.0)
    drop = torch.nn.Dropout(dropout)
    head = torch.nn.Linear(H, V)
    params = list(emb.parameters()) + list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    D = (len(data) - 1) // B
    lanes = data[:B * D + 1]
    xs_all = lanes[:-1].view(B, D)
    ys_all = lanes[1:].view(B, D)
    state, pos, chars = None, 0, 0
    start = time.perf_counter()
    for m in (emb, rnn, head, drop):
        m.train()
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        frac = elapsed / seconds
        for g in opt.param_groups:
            g["lr"] = lr if frac < 0.5 else lr * (1.0 - frac) / 0.5
        if pos + T > D:
            pos, state = 0, None
        x = xs_all[:, pos:pos + T].t()                        # (T, B)
        y = ys_all[:, pos:pos + T].t()
        out, state = rnn(drop(emb(x)), state)
        state = tuple(s.detach() for s in state)
        logits = head(drop(out))                              # (T, B, V)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        pos += T
        chars += T * B
    rate = chars / (time.perf_counter() - start)
    for m in (emb, rnn, head, drop):
        m.eval()
    with torch.no_grad():
        hx = (state[0][:, -1:].contiguous(), state[1][:, -1:].contiguous())
        idx = [ix.get(c, 0) for c in held]
        total, n = 0.0, 0
        for s in range(0, len(idx) - 1, 1024):
            xb = torch.tensor(idx[s:s + 1024], dtype=torch.int64)[:len(idx) - 1 - s]
            yb = torch.tensor(idx[s + 1:s + 1025], dtype=torch.int64)
            xb = xb[:len(yb)]
            out, hx = rnn(emb(xb.view(-1, 1)), hx)
            total += torch.nn.functional.cross_entropy(head(out.view(-1, H)), yb, reduction="sum").item()
            n += len(yb)
    return total / n, rate


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--held", required=True)
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--dropout", type=float, default=0.0)
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    with open(a.train, encoding="utf-8") as f:
        train = f.read()
    with open(a.held, encoding="utf-8") as f:
        held = f.read()
    scores = []
    for seed in (int(s) for s in a.seeds.split(",")):
        nats, rate = run(torch, train, held, seed, a.seconds, a.hidden, a.layers, a.batch, a.seq, a.lr, a.dropout)
        scores.append(nats)
        print(f"seed {seed}: {nats:.4f} nats/char held out, {rate:,.0f} chars/s trained", flush=True)
    print(f"torch {a.hidden}x{a.layers} batch {a.batch} dropout {a.dropout}: median {statistics.median(scores):.4f}, "
          f"worst {max(scores):.4f} over {len(scores)} seeds ({torch.__version__}, {a.threads} threads)")


if __name__ == "__main__":
    main()
