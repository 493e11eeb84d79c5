"""Every seed, not a lucky one: default training on two corpora for many seeds, then a sample and held-out scores.

    python benchmarks/seeds.py --corpus ../shared/corpora/tinyshakespeare.txt [--seeds 16] [--passes 1]

For each corpus and seed: a default model (H=100, T=25, Adagrad lr 0.1, `--random-seed SEED`) trains
on the first 90% of the corpus (tiny-shakespeare: 1,003,854 characters) for `--passes` passes, as
`charstream train` does; then it writes 2,000 characters (`generate --random-seed SEED`) and scores
the held-out last 10%, which it never trained on, from the state training left (`eval`), from a
zero state (`eval --fresh-state`) and adapting (`eval --adapt`). A sample is degenerate when its
unigram entropy is under 3.5 bits or one character is over 25% of it. `gap` is eval's nats/char
minus the run's final prequential loss (min-char-rnn's smoothed loss per character).

The second corpus is German: the machine's German man pages (/usr/share/man/de, Debian's
translations, roff markup stripped), split the same way, unless --second is given a text file. Not a test: it takes a few minutes and prints every seed, then the median and
the worst.
"""
import argparse
import collections
import glob
import gzip
import itertools
import math
import re
import statistics
import sys
import time

import charstream
from charstream.scoring import score, score_adaptive


UMLAUT = str.maketrans("aouAOU", "äöüÄÖÜ")
NAMED = {"ss": "ß", "em": "—", "en": "–", "lq": "“", "rq": "”", "aq": "'", "Fo": "«", "Fc": "»", "bu": "•"}


def man_corpus(lang="de", limit=1_250_000):
    """About `limit` characters of German prose: the machine's man pages in /usr/share/man/LANG,
    sorted, with roff requests and font escapes removed (Debian ships these translations)."""
    parts, n = [], 0
    for path in sorted(glob.glob(f"/usr/share/man/{lang}/man*/*.gz")):
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if not line.startswith((".", "'"))]
        text = re.sub(r"\\f[BIRP]|\\f\(..|\\&|\\[-e]", lambda m: "-" if m.group() == "\\-" else "", "".join(lines))
        text = re.sub(r"\\\(:([aouAOU])", lambda m: m.group(1).translate(UMLAUT), text)
        text = re.sub(r"\\\((..)", lambda m: NAMED.get(m.group(1), ""), text)
        parts.append(text)
        n += len(text)
        if n >= limit:
            break
    return "".join(parts)[:limit]


def sample_stats(text):
    counts = collections.Counter(text)
    n = len(text)
    entropy = -sum(c / n * math.log2(c / n) for c in counts.values())
    return entropy, max(counts.values()) / n


def run(text, seed, passes, reset_each_pass=False, reset_every=0):
    cut = int(len(text) * 0.9)
    train, held = text[:cut], text[cut:]
    model = charstream.Model("", 100, seed=seed)
    trainer = charstream.Trainer(model)
    t0 = time.perf_counter()
    for p in range(passes):
        if reset_each_pass and p:
            model.state.hprev[:] = 0.0
        for record in trainer.train(train[i:i + 65536] for i in range(0, len(train), 65536)):
            if reset_every and record.chars // reset_every != (record.chars - record.seq_length) // reset_every:
                model.state.hprev[:] = 0.0     # the next chunk starts from zeros (a candidate, measured)
    seconds = time.perf_counter() - t0
    final = model.state.smooth_loss / model.state.seq_length
    sample = "".join(itertools.islice(model.generate(random_seed=seed), 2000))
    entropy, top = sample_stats(sample)
    return {
        "seed": seed, "train_s": seconds, "final": final, "entropy": entropy, "top": top,
        "degenerate": entropy < 3.5 or top > 0.25,
        "eval": score(model, [held]).nats_per_char,
        "fresh": score(model, [held], fresh_state=True).nats_per_char,
        "adapt": score_adaptive(model, [held]).nats_per_char,
    }


def report(name, rows):
    print(f"\n{name}: {len(rows)} seeds")
    print(f"{'seed':>4} {'train s':>8} {'final':>7} {'eval':>7} {'gap':>6} {'fresh':>7} {'adapt':>7} "
          f"{'entropy':>8} {'top':>6}  degenerate")
    for r in rows:
        print(f"{r['seed']:4d} {r['train_s']:8.1f} {r['final']:7.3f} {r['eval']:7.3f} {r['eval'] - r['final']:+6.3f} "
              f"{r['fresh']:7.3f} {r['adapt']:7.3f} {r['entropy']:8.3f} {r['top']:6.1%}  {'YES' if r['degenerate'] else 'no'}")
    gaps = [abs(r["eval"] - r["final"]) for r in rows]
    print(f"median: eval {statistics.median(r['eval'] for r in rows):.3f}, fresh {statistics.median(r['fresh'] for r in rows):.3f}, "
          f"adapt {statistics.median(r['adapt'] for r in rows):.3f}, |gap| {statistics.median(gaps):.3f}, "
          f"entropy {statistics.median(r['entropy'] for r in rows):.3f}")
    print(f"worst:  eval {max(r['eval'] for r in rows):.3f}, fresh {max(r['fresh'] for r in rows):.3f}, "
          f"adapt {max(r['adapt'] for r in rows):.3f}, |gap| {max(gaps):.3f}, "
          f"entropy {min(r['entropy'] for r in rows):.3f}, top char {max(r['top'] for r in rows):.1%}; "
          f"degenerate samples: {sum(r['degenerate'] for r in rows)}; adapt beat eval in "
          f"{sum(r['adapt'] < r['eval'] for r in rows)}/{len(rows)}")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True, help="tiny-shakespeare (or another English text)")
    ap.add_argument("--second", default=None, help="a second corpus (default: German man pages)")
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--reset-each-pass", action="store_true", help="zero hprev at the start of each pass (the gist's way)")
    ap.add_argument("--reset-every", type=int, default=0, metavar="N", help="zero hprev every N characters trained")
    ap.add_argument("--only-first", action="store_true", help="the first corpus only")
    args = ap.parse_args()
    with open(args.corpus, encoding="utf-8") as f:
        first = f.read()
    if args.second:
        with open(args.second, encoding="utf-8") as f:
            second, second_name = f.read(), args.second
    else:
        second, second_name = man_corpus("de"), "German man pages (/usr/share/man/de)"
    print(f"charstream seeds benchmark: H=100, T=25, lr 0.1, {args.passes} pass(es)"
          f"{', hprev reset each pass' if args.reset_each_pass else ''}"
          f"{f', hprev reset every {args.reset_every:,} chars' if args.reset_every else ''}, held-out last 10%")
    corpora = ((args.corpus, first),) + (() if args.only_first else ((second_name, second),))
    for name, text in corpora:
        report(f"{name} ({len(text):,} chars)",
               [run(text, s, args.passes, args.reset_each_pass, args.reset_every) for s in range(args.seeds)])


if __name__ == "__main__":
    main()
