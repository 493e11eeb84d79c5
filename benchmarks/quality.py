"""The best model a CPU budget buys: held-out nats/char for training recipes, over several seeds.

    python benchmarks/quality.py [--corpus PATH] [--configs 100:1:0.1,100:10:0.05] [--seeds 8]

Holds out the last 10% of the corpus (tiny-shakespeare by default). For each configuration
H:passes:learning-rate and each seed, a model trains on the first 90% as
`charstream train train.txt --hidden-size H --passes P --learning-rate LR --random-seed SEED` does
(the passes as one stream), then the held-out text is scored as `charstream eval` scores it: the
whole text from the state training left, plus `--fresh-state` and `--adapt` for comparison. Prints
every seed, then the median and the worst, and the training chars/s measured in this process.
"""
import argparse
import os
import statistics
import time

import charstream
from charstream.scoring import score, score_adaptive

DEFAULT_CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "corpora",
                              "tinyshakespeare.txt")


def read_split(ap, path):
    """The corpus at `path` as (first 90%, last 10%), or the parser's usage error if there is none."""
    if not os.path.isfile(path):
        ap.error(f"{path}: no such file; give --corpus PATH")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:]


def train(text, hidden, passes, lr, seed):
    model = charstream.Model("", hidden, seed=seed)
    trainer = charstream.Trainer(model, learning_rate=lr)
    blocks = (text[i:i + 1 << 20] for _ in range(passes) for i in range(0, len(text), 1 << 20))
    t = time.perf_counter()
    for _ in trainer.train(blocks):
        pass
    return model, model.state.chars_trained / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=os.environ.get("CHARSTREAM_CORPUS", DEFAULT_CORPUS),
                    help="text file (default: $CHARSTREAM_CORPUS, else tiny-shakespeare in ../shared beside the repo)")
    ap.add_argument("--configs", default="100:1:0.1,100:10:0.05", help="comma-separated H:passes:learning-rate")
    ap.add_argument("--seeds", type=int, default=8)
    args = ap.parse_args(argv)
    train_text, held = read_split(ap, args.corpus)
    print(f"held-out: the last {len(held):,} characters of {os.path.basename(args.corpus)}; nats/char")
    for cfg in args.configs.split(","):
        hidden, passes, lr = cfg.split(":")
        hidden, passes, lr = int(hidden), int(passes), float(lr)
        rows = []
        for seed in range(args.seeds):
            m, rate = train(train_text, hidden, passes, lr, seed)
            rows.append((seed, score(m, [held]).nats_per_char, score(m, [held], fresh_state=True).nats_per_char,
                         score_adaptive(m, [held]).nats_per_char, rate))
            print(f"  H={hidden} passes={passes} lr={lr:g} seed {seed}: eval {rows[-1][1]:.4f}  "
                  f"fresh {rows[-1][2]:.4f}  adapt {rows[-1][3]:.4f}  ({rate:,.0f} chars/s)", flush=True)
        col = list(zip(*rows))
        print(f"H={hidden} passes={passes} lr={lr:g}, {len(rows)} seeds: eval median {statistics.median(col[1]):.4f} "
              f"worst {max(col[1]):.4f}; fresh median {statistics.median(col[2]):.4f} worst {max(col[2]):.4f}; "
              f"adapt median {statistics.median(col[3]):.4f} worst {max(col[3]):.4f}; "
              f"{statistics.median(col[4]):,.0f} chars/s", flush=True)


if __name__ == "__main__":
    main()
