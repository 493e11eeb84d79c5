"""Speed turned into quality: held-out loss after the gist oracle's one pass vs charstream in the same wall time.

    python benchmarks/quality.py [--corpus PATH] [--configs 100:1,256:1] [--seed 0]

Holds out the last 10% of the corpus. Times the gist-style numpy oracle (tests/oracle.py) on one
pass over the first 90% (H=100, T=25, lr=0.1), then gives charstream that same wall time
(`--max-seconds`, with as many passes as fit) for each configuration H:passes, and scores every model
on the held-out text as the median nats/char over 2,000-character windows from a fresh state.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import oracle  # noqa: E402

import charstream  # noqa: E402
from charstream.scoring import score  # noqa: E402

DEFAULT_CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "corpora",
                              "tinyshakespeare.txt")


def held_out_score(model, text):
    s = score(model, [text], window=2000)
    return s.median_window, s.nats_per_char


def run_oracle(train_text, seed):
    vocab = sorted(set(train_text))
    m = charstream.Model(vocab, hidden_size=100, seed=seed)
    mem = {k: np.zeros_like(v) for k, v in m.params.items()}
    idx = list(m.encode(train_text))
    t = time.perf_counter()
    oracle.train(m.params, mem, idx)
    return m, time.perf_counter() - t


def run_charstream(train_path, seconds, hidden, passes, lr, seed, workdir):
    path = os.path.join(workdir, f"cs-{hidden}-{passes}-{lr}.npz")
    cmd = [sys.executable, "-m", "charstream", "train", train_path, "--model", path, "--hidden-size",
           str(hidden), "--passes", str(passes), "--max-seconds", str(seconds), "--random-seed", str(seed),
           "--learning-rate", str(lr),
           "--sample-every", "0", "--report-every", "1000000", "--checkpoint-every", "0"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=workdir, stderr=subprocess.DEVNULL)
    return charstream.load(path), time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=os.environ.get("CHARSTREAM_CORPUS", DEFAULT_CORPUS),
                    help="text file (default: $CHARSTREAM_CORPUS, else tiny-shakespeare in ../shared beside the repo)")
    ap.add_argument("--configs", default="100:20,128:20", help="comma-separated H:max-passes[:learning-rate]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=None, help="budget (default: the oracle's measured time)")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.corpus):
        ap.error(f"{args.corpus}: no such file; give --corpus PATH")
    text = open(args.corpus, encoding="utf-8").read()
    cut = int(len(text) * 0.9)
    train_text, held = text[:cut], text[cut:]
    with tempfile.TemporaryDirectory() as workdir:
        train_path = os.path.join(workdir, "train.txt")
        with open(train_path, "w", encoding="utf-8") as f:
            f.write(train_text)
        if args.seconds is None:
            om, seconds = run_oracle(train_text, args.seed)
            med, whole = held_out_score(om, held)
            print(f"oracle (gist numpy, H=100, 1 pass): {seconds:.1f} s; held-out median-window "
                  f"{med:.4f} nats/char (whole text {whole:.4f})", flush=True)
        else:
            seconds = args.seconds
        for cfg in args.configs.split(","):
            parts = cfg.split(":")
            hidden, passes, lr = int(parts[0]), int(parts[1]), float(parts[2]) if len(parts) > 2 else 0.1
            m, wall = run_charstream(train_path, seconds, hidden, passes, lr, args.seed, workdir)
            med, whole = held_out_score(m, held)
            done = m.state.chunks * m.state.seq_length / len(train_text)
            print(f"charstream H={hidden} lr={lr:g}: {done:.2f} passes in {wall:.1f} s; held-out median-window "
                  f"{med:.4f} nats/char (whole text {whole:.4f})", flush=True)


if __name__ == "__main__":
    main()
