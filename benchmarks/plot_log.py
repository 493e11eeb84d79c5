"""Plot a `charstream train --log` file (CSV or JSON lines): bits/char against characters trained.

    python benchmarks/plot_log.py loss.csv docs/loss.png     # needs matplotlib (not a dependency)
"""
import csv
import json
import sys


def read(path):
    with open(path, encoding="utf-8") as f:
        if path.lower().endswith(".csv"):
            return list(csv.DictReader(f))
        return [json.loads(line) for line in f if line.strip()]


def main(log_path, png_path):
    try:
        import matplotlib
    except ImportError:
        sys.exit("Error: plot_log.py needs matplotlib, which charstream does not install: pip install matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = read(log_path)
    x = [int(r["chars_trained"]) / 1e6 for r in rows]
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    ax.plot(x, [float(r["window_bits_per_char"]) for r in rows], lw=0.8, label="last 100 chunks (test-then-train)")
    ax.plot(x, [float(r["smooth_nats_per_char"]) / 0.6931471805599453 for r in rows], lw=1.5,
            label="min-char-rnn smoothed loss")
    ax.set_xlabel("characters trained (millions)")
    ax.set_ylabel("bits/char")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python benchmarks/plot_log.py LOG(.csv|.jsonl) OUT.png")
    main(*sys.argv[1:3])
