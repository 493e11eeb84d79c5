"""Held-out nats/char after a time budget, as the command line trains it, over several seeds.

    python benchmarks/budget.py [--corpus PATH] [--cell lstm] [--seconds 60,180] [--seeds 8]
                                [--jobs 2] [-- EXTRA TRAIN OPTIONS]

Holds out the last 10% of the corpus (tiny-shakespeare by default) and, for each budget and seed, runs

    charstream train train.txt --model M --cell CELL --passes 100 --max-seconds S --random-seed SEED
    charstream eval held.txt --model M --json

as subprocesses, `--jobs` at a time (one core each: keep it at or below the core count, and the
machine otherwise idle). Prints every run (nats/char, characters trained, chars/s), then the median
and the worst per budget.
"""
import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile

from quality import DEFAULT_CORPUS, read_split

CLI = [sys.executable, "-m", "charstream"]


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
    return out.stdout


def one(tmp, cell, seconds, seed, extra):
    model = os.path.join(tmp, f"{cell}-{seconds}-{seed}.npz")
    run(CLI + ["train", os.path.join(tmp, "train.txt"), "--model", model, "--cell", cell, "--passes", "100",
               "--max-seconds", str(seconds), "--random-seed", str(seed)] + extra)
    ev = json.loads(run(CLI + ["eval", os.path.join(tmp, "held.txt"), "--model", model, "--json"]))
    info = json.loads(run(CLI + ["info", "--model", model, "--json"]))
    return ev["nats_per_char"], info["chars_trained"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=os.environ.get("CHARSTREAM_CORPUS", DEFAULT_CORPUS))
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--seconds", default="60,180", help="comma-separated --max-seconds budgets")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("extra", nargs="*", help="more options for charstream train (after --)")
    args = ap.parse_args(argv)
    train_text, held = read_split(ap, args.corpus)
    budgets = [int(s) for s in args.seconds.split(",")]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    print(f"held-out: the last {len(held):,} characters of {os.path.basename(args.corpus)}; "
          f"--cell {args.cell} {' '.join(args.extra)}; {args.jobs} at a time", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, part in (("train.txt", train_text), ("held.txt", held)):
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                f.write(part)
        jobs = [(s, seed) for s in budgets for seed in seeds]
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = {job: pool.submit(one, tmp, args.cell, job[0], job[1], args.extra) for job in jobs}
            results = {}
            for job in jobs:
                results[job] = futures[job].result()
                nats, chars = results[job]
                print(f"  {job[0]:4d} s seed {job[1]}: {nats:.4f} nats/char, {chars:,} chars "
                      f"({chars / job[0]:,.0f}/s)", flush=True)
    for s in budgets:
        col = [results[(s, seed)][0] for seed in seeds]
        rate = statistics.median(results[(s, seed)][1] / s for seed in seeds)
        print(f"{args.cell} {s} s, {len(col)} seeds: median {statistics.median(col):.4f}, worst {max(col):.4f}, "
              f"best {min(col):.4f}; {rate:,.0f} chars/s")


if __name__ == "__main__":
    main()
