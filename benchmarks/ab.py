"""A/B two builds of the kernel in one process: alternating rounds, the median ratio B/A first.

    python setup.py build_ext -b /tmp/A -t /tmp/A.o    # the build to compare against
    (change ext/, setup.py or the flags)
    python setup.py build_ext -b /tmp/B -t /tmp/B.o
    python benchmarks/ab.py /tmp/A /tmp/B [--hidden-size 100] [--rounds 7] [--cell rnn|gru|lstm]

(`-t`, a build-temp directory of its own per build: setuptools links an object file that is newer
than the source again without compiling it, so a change of flags alone would not show.)

Each directory holds what `build_ext -b DIR` writes: one module per kernel path,
`charstream/_rnn_step_{avx512,avx2,baseline}*.so` (or a single `_rnn_step*.so`, as builds before the
paths did). `DIR` loads the fastest path this CPU runs, `DIR:avx2` a given one. Both modules are
loaded side by side under different names and drive the same parameters, so a noisy machine moves
both alike: an A/A run reads 1.00 within 1%. `train` is `Kernel.train_chunk` over consecutive chunks
(T=25) of tiny-shakespeare or the shipped corpus; `sample` is `Kernel.sample` in blocks of 4096.
`--cell gru|lstm` times `CellKernel` (one layer, the cell's optimizer) instead.
"""
import argparse
import importlib.machinery
import importlib.util
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import corpus_text, repeat_to  # noqa: E402

import charstream  # noqa: E402
from charstream import _cpu, _kernel  # noqa: E402


def load_build(arg, name):
    """The kernel module built into directory DIR (`DIR` or `DIR:PATH`), imported as `name`."""
    d, _, want = arg.partition(":")
    found = {}
    for stem in [f"_rnn_step_{p}" for p in _kernel.PATHS] + ["_rnn_step"]:
        for sub in ("charstream", ""):
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                if os.path.exists(os.path.join(d, sub, stem + suffix)):
                    found.setdefault(stem, os.path.join(d, sub, stem + suffix))
    runnable = [p for p in _cpu.supported() if p == want or not want]
    stems = [f"_rnn_step_{p}" for p in runnable] + ([] if want else ["_rnn_step"])
    stem = next((s for s in stems if s in found), None)
    if stem is None:
        sys.exit(f"ab.py: no kernel {want or 'this CPU runs'} under {d} (build it with setup.py build_ext -b {d})")
    print(f"{name}: {found[stem]}")
    spec = importlib.util.spec_from_file_location(f"{name}.{stem}", found[stem])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_kernel(mod, model, params, train, T=25):
    """The build's kernel for `model`'s cell over `params`, with fresh optimizer memories if `train`."""
    mem = {k: np.zeros_like(v) for k, v in params.items()} if train else None
    if model.cell == "rnn":
        return mod.Kernel(params, mem, T)
    moments = {k: np.zeros_like(v) for k, v in params.items()} if train else None
    steps = np.zeros(1, np.int64) if train else None
    return mod.CellKernel(params, mem, T, cell=model.cell, moments=moments, steps=steps)


def train_rate(mod, model, idx, T=25):
    p = {k: v.copy() for k, v in model.params.items()}
    kernel, h = make_kernel(mod, model, p, True, T), model.start_state(fresh_state=True)
    chunks = (len(idx) - 1) // T
    t = time.perf_counter()
    for c in range(chunks):
        kernel.train_chunk(idx, c * T, h, 0.1)
    return chunks * T / (time.perf_counter() - t)


def sample_rate(mod, model, n=200_000, block=4096):
    kernel, h = make_kernel(mod, model, model.params, False), model.start_state(fresh_state=True)
    u, out = np.random.default_rng(0).random(n), np.empty(n, np.int32)
    t = time.perf_counter()
    for s in range(0, n, block):
        kernel.sample(h, u[s:s + block], out[s:s + block], 1.0)
    return n / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="DIR or DIR:PATH (avx512, avx2, baseline)")
    ap.add_argument("b", help="DIR or DIR:PATH")
    ap.add_argument("--hidden-size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--chars", type=int, default=100_000)
    ap.add_argument("--corpus", default=None, help="text file (default: the shipped corpus)")
    ap.add_argument("--cell", default="rnn", choices=("rnn", "gru", "lstm"))
    args = ap.parse_args(argv)
    mods = (load_build(args.a, "build_a"), load_build(args.b, "build_b"))
    text = corpus_text(args.corpus)
    H = args.hidden_size
    model = charstream.Model(sorted(set(text)), hidden_size=H, seed=0, cell=args.cell)
    idx = model.encode(repeat_to(text, args.chars + 1)[:args.chars + 1]).astype(np.int32)
    print(f"B = {args.b} vs A = {args.a}: {args.cell}, H={H}, V={model.vocab_size}, T=25, "
          f"median of {args.rounds} rounds")
    n = max(int(200_000 * min(1.0, (100 / H) ** 2 * (1 if args.cell == "rnn" else 0.3))), 5000)
    for name, f in (("train", lambda m: train_rate(m, model, idx)),
                    ("sample", lambda m: sample_rate(m, model, n))):
        ra, rb = [], []
        for _ in range(args.rounds):
            ra.append(f(mods[0]))
            rb.append(f(mods[1]))
        ratio = statistics.median(y / x for x, y in zip(ra, rb))
        print(f"{name:7} B/A {ratio:6.3f}   A {statistics.median(ra):11,.0f}/s   B {statistics.median(rb):11,.0f}/s")


if __name__ == "__main__":
    main()
