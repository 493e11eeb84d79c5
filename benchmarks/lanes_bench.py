"""Training speed of LaneKernel (lanes, float32, threads) against PyTorch's nn.LSTM/GRU at the same shapes
and threads when torch is importable, and against the FLOP floor: numpy's matmul rate on the same
dtype, measured in the same round. Prints chars/s and ratios; run it, don't test it.

    python benchmarks/lanes_bench.py                      # the default rows
    python benchmarks/lanes_bench.py --rows lstm:2:256:32:2,lstm:1:128:4:2 --seconds 3 --rounds 3
"""
import argparse
import statistics
import time

import numpy as np

from charstream import cells
from charstream._kernel import ISA, LaneKernel

V, T = 65, 64


def _rate(step, seconds):
    step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - t0)


def ours(cell, L, H, B, threads, dtype, seconds):
    rng = np.random.default_rng(0)
    p = {q.name: q.initial(rng).astype(dtype) for q in cells.params(cell, L, V, H)}
    zeros = lambda: {k: np.zeros_like(v) for k, v in p.items()}
    k = LaneKernel(p, zeros(), T, cell=cell, layers=L, moments=zeros(), steps=np.zeros(1, np.int64), lanes=B,
                   threads=threads)
    xs = rng.integers(0, V, (B, T + 1)).astype(np.int32)
    h = np.zeros((B, cells.state_size(cell, L, H)), dtype)
    return _rate(lambda: k.train_chunk(xs, 0, h, 1e-3), seconds) * B * T


def flops_per_char(cell, L, H):
    """Multiply-adds times 2 of the products a trained character needs: forward, and twice that back."""
    G = cells.GATES[cell]
    return 2 * 3 * (G * H * H * L + G * H * H * (L - 1) + V * H)


def floor(dtype, threads, seconds):
    """numpy's matmul (1024x1024 by 1024x256) in FLOP/s, on `threads` threads where threadpoolctl is there."""
    a, b = np.ones((1024, 1024), dtype), np.ones((1024, 256), dtype)
    try:
        from threadpoolctl import threadpool_limits
        with threadpool_limits(threads):
            return _rate(lambda: a @ b, seconds) * 2 * 1024 * 1024 * 256
    except ImportError:
        return _rate(lambda: a @ b, seconds) * 2 * 1024 * 1024 * 256


def torch_rate(cell, L, H, B, threads, seconds):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    emb = torch.nn.Embedding(V, 64)
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](64, H, L, batch_first=True)
    head = torch.nn.Linear(H, V)
    params = list(emb.parameters()) + list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, 2e-3)
    x = torch.randint(0, V, (B, T + 1))

    def step():
        out, _ = rnn(emb(x[:, :-1]))
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, V), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5)
        opt.step()
    return _rate(step, seconds) * B * T


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="lstm:2:256:32:2,lstm:2:256:32:1,lstm:1:128:4:2,lstm:1:128:1:1,gru:1:256:32:2",
                    help="cell:layers:H:lanes:threads, comma-separated")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--verbose", action="store_true", help="print every round's rates")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds of sleep before each timed run, for the last run's idle threads (OpenBLAS's, "
                         "torch's, ours) to stop spinning on the cores it needs")
    a = ap.parse_args()
    print(f"kernel path {ISA}, {a.dtype}, T={T}, V={V}; medians of {a.rounds} rounds")
    print(f"{'row':<24}{'chars/s':>10}{'torch':>10}{'x torch':>9}{'% floor':>9}")
    for row in a.rows.split(","):
        cell, L, H, B, threads = row.split(":")
        L, H, B, threads = int(L), int(H), int(B), int(threads)
        got, ref, share = [], [], []
        for _ in range(a.rounds):
            f = floor(a.dtype, threads, 1.0)   # FLOP/s on those threads, this round
            time.sleep(a.settle)
            r = ours(cell, L, H, B, threads, a.dtype, a.seconds)
            got.append(r)
            share.append(r * flops_per_char(cell, L, H) / f)
            time.sleep(a.settle)
            t = torch_rate(cell, L, H, B, threads, a.seconds)
            if t:
                ref.append(t)
        if a.verbose:
            print("  rounds:", [round(g) for g in got], [round(t) for t in ref])
        med = statistics.median(got)
        tref = statistics.median(ref) if ref else None
        print(f"{row:<24}{med:>10,.0f}{(f'{tref:,.0f}' if tref else '-'):>10}"
              f"{(f'{med / tref:.2f}x' if tref else '-'):>9}{statistics.median(share):>8.0%}")


if __name__ == "__main__":
    main()
