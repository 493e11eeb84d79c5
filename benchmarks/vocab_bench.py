"""Benchmark: training chars/s at a large vocabulary (V=4,096, as Japanese or Chinese text has), against today's path in the same process.

    python benchmarks/vocab_bench.py [--vocab 4096] [--seconds 2] [--rounds 3] [--threads 2] [--lanes 16]

The text is V symbols drawn with Zipf-like frequencies (p_k ~ 1/(k+10)), so a chunk touches a few
dozen of the V columns of Wxh, as real text in a large script does. Each row trains chunks with
`Model.kernel(train=True, ...)`'s `train_chunk` for --seconds and prints chars/s; the reference rows
are the kernels as they ran before the large-vocabulary work (the rnn's `Kernel` with its dense
Adagrad over all of Wxh, `sparse=False`, which gives the same bits; the lstm's float64 one-lane
`CellKernel`), and each other row prints its ratio to its cell's reference measured in the same
round. Rounds alternate the rows, so a noisy machine moves them alike; the medians are printed.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

import charstream

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_bench import cpu_name  # noqa: E402


def zipf_stream(V, n, seed=0):
    p = 1.0 / (np.arange(V) + 10.0)
    return np.random.default_rng(seed).choice(V, size=n, p=p / p.sum()).astype(np.int32)


def model(V, cell, H, dtype):
    vocab = [chr(0x4E00 + i) for i in range(V)]    # CJK ideographs: a vocabulary of V characters
    return charstream.Model(vocab, hidden_size=H, seed=0, cell=cell, dtype=dtype)


def rate(m, xs, seconds, lanes=1, threads=1, sparse=None, T=25):
    """chars/s of train_chunk over xs for `seconds` (at least 3 chunks)."""
    k = m.kernel(seq_length=T, train=True, lanes=lanes, threads=threads)
    if sparse is not None:
        k.sparse = sparse
    S = m.state.hprev.shape[0]
    lr = m.state.learning_rate
    if lanes == 1:
        h = np.zeros(S, dtype=m.params["Why"].dtype)
        x2 = xs
    else:
        n = len(xs) // lanes
        x2 = np.ascontiguousarray(xs[:n * lanes].reshape(lanes, n))
        h = np.zeros((lanes, S), dtype=m.params["Why"].dtype)
    n = x2.shape[-1]
    chars, s, t0 = 0, 0, time.perf_counter()
    while True:
        if s + T + 1 > n:
            s = 0
        k.train_chunk(x2, s, h, lr)
        s += T
        chars += T * lanes
        t = time.perf_counter() - t0
        if t > seconds and chars >= 3 * T * lanes:
            return chars / t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=min(2, len(os.sched_getaffinity(0))))
    ap.add_argument("--lanes", type=int, default=16)
    a = ap.parse_args()
    V, B, N = a.vocab, a.lanes, a.threads
    xs = zipf_stream(V, 400_000)
    rows = [  # (name, cell, H, dtype, lanes, threads, sparse, reference row)
        ("rnn H=100 float64, 1 lane, dense Adagrad (before)", "rnn", 100, "float64", 1, 1, False, None),
        ("rnn H=100 float64, 1 lane (the default)", "rnn", 100, "float64", 1, 1, None, 0),
        (f"rnn H=100 float32, {B} lanes, {N} threads", "rnn", 100, "float32", B, N, None, 0),
        ("lstm H=128 float64, 1 lane (before)", "lstm", 128, "float64", 1, 1, None, None),
        (f"lstm H=128 float32, {B} lanes, {N} threads", "lstm", 128, "float32", B, N, None, 3),
        (f"lstm H=256 float32, {B} lanes, {N} threads, T=64 (the default)", "lstm", 256, "float32", B, N, None, 3),
    ]
    models = {(cell, H, dtype): model(V, cell, H, dtype) for _, cell, H, dtype, *_ in rows}
    got = [[] for _ in rows]
    ratios = [[] for _ in rows]
    for r in range(a.rounds):
        this = []
        for name, cell, H, dtype, lanes, threads, sparse, ref in rows:
            T = 64 if H == 256 else 25
            this.append(rate(models[cell, H, dtype], xs, a.seconds, lanes, threads, sparse, T))
        for i, row in enumerate(rows):
            got[i].append(this[i])
            if row[-1] is not None:
                ratios[i].append(this[i] / this[row[-1]])
        print(f"round {r}: " + ", ".join(f"{x:,.0f}" for x in this), flush=True)
    print(f"\nV={V}, {cpu_name()}, medians of {a.rounds} rounds of {a.seconds:g} s per row:")
    for i, row in enumerate(rows):
        ratio = f"  {statistics.median(ratios[i]):.2f}x its reference" if ratios[i] else "  (reference)"
        print(f"  {row[0]:<62} {statistics.median(got[i]):>10,.0f} chars/s{ratio}")


if __name__ == "__main__":
    main()
