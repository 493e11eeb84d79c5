"""Benchmark: charstream's training and generation chars/s against the gist-style numpy oracle, in one run.

    python benchmarks/bench.py [--corpus PATH] [--hidden-size 100] [--rounds 3]

Prints chars/s for each implementation (median of the rounds) and the ratio to the oracle measured in
the same process, so a noisy machine moves both sides alike.
"""
import argparse
import itertools
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import oracle  # noqa: E402

import charstream  # noqa: E402


def corpus_text(path):
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read()
    from importlib.resources import files
    return (files("charstream") / "data" / "shakespeare.txt").read_text(encoding="utf-8")


def bench_charstream_train(text, H, n):
    m = charstream.Model(sorted(set(text)), hidden_size=H, seed=0)
    t = time.perf_counter()
    for _ in charstream.Trainer(m).train([text[:n + 1]]):
        pass
    return n / (time.perf_counter() - t)


def bench_charstream_generate(text, H, n):
    m = charstream.Model(sorted(set(text)), hidden_size=H, seed=0)
    g = m.generate("T", random_seed=0)
    t = time.perf_counter()
    for _ in itertools.islice(g, n):
        pass
    return n / (time.perf_counter() - t)


def bench_oracle_train(text, H, n):
    vocab = sorted(set(text))
    m = charstream.Model(vocab, hidden_size=H, seed=0)
    p = {k: v.copy() for k, v in m.params.items()}
    mem = {k: np.zeros_like(v) for k, v in p.items()}
    idx = list(m.encode(text[:n + 1]))
    t = time.perf_counter()
    oracle.train(p, mem, idx)
    return n / (time.perf_counter() - t)


def bench_oracle_sample(text, H, n):
    m = charstream.Model(sorted(set(text)), hidden_size=H, seed=0)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    oracle.sample(m.params, np.zeros(H), 0, n, rng)
    return n / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=None, help="text file (default: the shipped corpus)")
    ap.add_argument("--hidden-size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chars", type=int, default=100_000, help="characters charstream trains per round")
    args = ap.parse_args(argv)
    text = corpus_text(args.corpus)
    H, n = args.hidden_size, min(args.chars, len(text) - 1)
    n_oracle = max(n // 10, 2500)
    rows = {"train": [], "generate": []}
    for _ in range(args.rounds):
        o_t = bench_oracle_train(text, H, n_oracle)
        c_t = bench_charstream_train(text, H, n)
        o_s = bench_oracle_sample(text, H, n_oracle)
        c_s = bench_charstream_generate(text, H, n * 5)
        rows["train"].append((c_t, o_t))
        rows["generate"].append((c_s, o_s))
    print(f"H={H} V={len(set(text))} T=25 float64, median of {args.rounds} rounds")
    print(f"{'':10} {'ratio':>8} {'charstream':>14} {'gist oracle':>14}")
    for name, r in rows.items():
        c = statistics.median(x for x, _ in r)
        o = statistics.median(y for _, y in r)
        ratio = statistics.median(x / y for x, y in r)
        print(f"{name:10} {ratio:7.1f}x {c:12,.0f}/s {o:12,.0f}/s")


if __name__ == "__main__":
    main()
