"""Training longer never makes the model worse: `train --max-seconds` on a small corpus against fixed passes.

    flock /tmp/cs-bench.lock python benchmarks/small_corpus.py --seeds 0 [--seconds 60] [--chars 36000]

The first `--chars` characters of tiny-shakespeare (36,000: the slice of issue 23), the first 90% to
train on (train.txt), the last 10% held out (held.txt). For each seed: `charstream train train.txt
--cell lstm --max-seconds SECONDS --random-seed SEED` with no other option (so: passes until the
budget, 10% of train.txt held out as the validation text, the best model kept, dropout), and beside
it, in the same process, the fixed sweep `--passes 2, 5, 8 --no-validation` (training on all of
train.txt, as main did). Each model scores held.txt as `charstream eval` does (the state carried from
training). Prints every run, then per setting the median and the worst over the seeds given; run it
once per seed or two (each seed takes SECONDS plus ~20 s) and join the lines.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import charstream

CORPUS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpora", "tinyshakespeare.txt")


def train(folder, name, train_txt, seed, args):
    path = os.path.join(folder, name + ".npz")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "charstream", "train", train_txt, "--cell", "lstm", "--random-seed",
                    str(seed), "--model", path, "--report-every", "0", "--sample-every", "0", *args],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=CORPUS)
    ap.add_argument("--chars", type=int, default=36_000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--passes", type=int, nargs="*", default=[2, 5, 8])
    ap.add_argument("--extra", default="", help="more options for the budget run (e.g. '--dropout 0')")
    a = ap.parse_args()
    text = open(a.corpus, encoding="utf-8").read()[:a.chars]
    cut = int(len(text) * 0.9)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        train_txt = os.path.join(folder, "train.txt")
        with open(train_txt, "w", encoding="utf-8") as f:
            f.write(text[:cut])
        held = text[cut:]
        for seed in a.seeds:
            runs = [(f"--max-seconds {a.seconds:g}" + (f" {a.extra}" if a.extra else ""),
                     ["--max-seconds", str(a.seconds), *a.extra.split()])]
            runs += [(f"--passes {p}", ["--passes", str(p), "--no-validation"]) for p in a.passes]
            for label, args in runs:
                path, secs = train(folder, f"s{seed}", train_txt, seed, args)
                model = charstream.load(path)
                score = model.evaluate(held)
                v = model.validation
                best = "" if v is None else (f"  best {v['best_loss']:.3f} at {v['best_chars']:,} chars, "
                                             f"{v['count']} validations")
                print(f"seed {seed}  {label:28s} held-out {score:.4f} nats/char  ({secs:.1f} s{best})", flush=True)
                results.setdefault(label, []).append(score)
                os.unlink(path)
    for label, scores in results.items():
        print(f"{label:28s} median {statistics.median(scores):.4f}  worst {max(scores):.4f}  ({len(scores)} seeds)")


if __name__ == "__main__":
    main()
