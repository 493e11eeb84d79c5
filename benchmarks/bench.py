"""Benchmark: charstream against min-char-rnn's numpy, the best numpy and PyTorch, in one run.

    python benchmarks/bench.py [--corpus PATH] [--hidden-sizes 100,256,512] [--rounds 3]
                               [--cell-sizes 128,256,512] [--torch-dtype float64]
                               [--no-cli] [--memory-mb 50]

Figures are chars/s, medians of the rounds. Ratios are taken within each round against peers measured
in the same process a moment apart, so a noisy machine moves both sides alike; they come first. BLAS
and torch are held to one thread, like charstream. The FLOP floor is the chars/s that one core would
reach doing only the products (6H^2 + 6VH FLOP per trained char, 2H^2 + 2VH per sampled one) at the
dgemm rate numpy reaches on this machine with one thread (for the gated cells, measured again in
each round just before charstream's run; the share is the median of the rounds'). Their generate
rows also show `Whh@h alone`: the chars/s of numpy's one-thread matrix-vector product over Whh and
nothing else, which bounds sampling once Whh no longer fits in L2 (every character reads all of it).

The CLI rows time `cat corpus | charstream train -` and `charstream generate --length N > /dev/null`
as subprocesses, startup included, against the API in this process. `--memory-mb` trains the CLI on a
stream of that many MB and samples its resident memory.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"   # before numpy loads: one thread, like charstream

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "tests")]
import oracle  # noqa: E402
import peers  # noqa: E402

import charstream  # noqa: E402
from charstream import load  # noqa: E402


def corpus_text(path):
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read()
    from importlib.resources import files
    return (files("charstream") / "data" / "shakespeare.txt").read_text(encoding="utf-8")


def repeat_to(text, n):
    """The text repeated until it holds at least n characters."""
    return text * (1 + n // len(text))


def timed(f, n):
    t = time.perf_counter()
    f()
    return n / (time.perf_counter() - t)


def dgemm_gflops(tries=5):
    """numpy's one-thread dgemm rate, best of `tries` 1000x1000 products."""
    rng = np.random.default_rng(0)
    a, b = rng.random((1000, 1000)), rng.random((1000, 1000))
    return 2e9 / _best(lambda: a @ b, tries) / 1e9


def _time(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def _best(f, tries):
    """The shortest of `tries` timed calls of f, after one untimed call."""
    f()
    return min(_time(f) for _ in range(tries))


# --- one measurement each: chars/s ---------------------------------------------------------------

def train_charstream(text, H, n):
    m = charstream.Model(sorted(set(text)), hidden_size=H, seed=0)
    return timed(lambda: [None for _ in charstream.Trainer(m).train([text[:n + 1]])], n)


def train_oracle(text, H, n):
    m = charstream.Model(sorted(set(text)), hidden_size=H, seed=0)
    p = {k: v.copy() for k, v in m.params.items()}
    mem = {k: np.zeros_like(v) for k, v in p.items()}
    idx = list(m.encode(text[:n + 1]))
    return timed(lambda: oracle.train(p, mem, idx), n)


def train_numpy(text, H, n):
    m = charstream.Model(sorted(set(text)), hidden_size=H, seed=0)
    idx = m.encode(text[:n + 1])
    return timed(lambda: peers.numpy_train(m.params, idx), n)


def train_torch(text, H, n):
    m = charstream.Model(sorted(set(text)), hidden_size=H, seed=0)
    idx = m.encode(text[:n + 1])
    return timed(lambda: peers.torch_train(m.params, idx), n)


def generate_charstream(text, H, n):
    m = charstream.Model(sorted(set(text)), hidden_size=H, seed=0)
    return timed(lambda: [None for _ in m.generate("T", random_seed=0, length=n)], n)


def generate_oracle(text, H, n):
    m = charstream.Model(sorted(set(text)), hidden_size=H, seed=0)
    rng = np.random.default_rng(0)
    return timed(lambda: oracle.sample(m.params, np.zeros(H), 0, n, rng), n)


def generate_numpy(text, H, n):
    m = charstream.Model(sorted(set(text)), hidden_size=H, seed=0)
    rng = np.random.default_rng(0)
    return timed(lambda: peers.numpy_sample(m.params, np.zeros(H), 0, n, rng), n)


def generate_torch(text, H, n):
    m = charstream.Model(sorted(set(text)), hidden_size=H, seed=0)
    return timed(lambda: peers.torch_sample(m.params, 0, n), n)


# --- the table -----------------------------------------------------------------------------------

PEERS = ("oracle", "numpy", "torch")


def bench_size(text, H, rounds, chars, use_torch):
    """{task: {impl: [chars/s per round]}} for one hidden size."""
    scale = min(1.0, (100 / H) ** 2)
    n = max(int(chars * scale), 5000)
    small = max(n // 10, 1000)
    text = repeat_to(text, 5 * n + 2)
    runs = {
        "train": [("charstream", train_charstream, n), ("oracle", train_oracle, small),
                  ("numpy", train_numpy, max(n // 3, 2000))],
        "generate": [("charstream", generate_charstream, 5 * n), ("oracle", generate_oracle, small),
                     ("numpy", generate_numpy, 2 * small)],
    }
    if use_torch:
        runs["train"].append(("torch", train_torch, small))
        runs["generate"].append(("torch", generate_torch, small))
    out = {task: {name: [] for name, _, _ in r} for task, r in runs.items()}
    for _ in range(rounds):
        for task, r in runs.items():
            for name, f, k in r:
                out[task][name].append(f(text, H, k))
    return out


def print_table(results, V, gflops, rounds):
    have = [p for p in PEERS if any(p in r for res in results.values() for r in res.values())]
    print(f"charstream vs peers: float64, T=25, V={V}, median of {rounds} rounds; "
          f"dgemm {gflops:.1f} GFLOP/s (numpy, one thread)")
    head = f"{'':9}{'H':>4}" + "".join(f"{'x ' + p:>10}" for p in have)
    head += f"{'charstream':>13}" + "".join(f"{p:>11}" for p in have) + f"{'floor':>13}{'of floor':>10}"
    print(head)
    for H, res in results.items():
        for task, r in res.items():
            c = r["charstream"]
            line = f"{task:9}{H:>4}"
            for p in have:
                line += (f"{statistics.median(x / y for x, y in zip(c, r[p])):9.1f}x" if p in r
                         else f"{'-':>10}")
            line += f"{statistics.median(c):11,.0f}/s"
            for p in have:
                line += f"{statistics.median(r[p]):9,.0f}/s" if p in r else f"{'-':>11}"
            flop = (6 if task == "train" else 2) * (H * H + V * H)
            floor = gflops * 1e9 / flop
            line += f"{floor:11,.0f}/s{statistics.median(c) / floor:9.0%}"
            print(line)


# --- the command line, as subprocesses -----------------------------------------------------------

def cli_command():
    exe = os.path.join(os.path.dirname(sys.executable), "charstream")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "charstream"]


def bench_cli(text, n_train, n_generate, rounds):
    """[(cli chars/s, api chars/s)] per round for training and for generation, H=100."""
    text = repeat_to(text, n_train)[:n_train + 1]
    tmp = tempfile.mkdtemp(prefix="charstream-bench-")
    rows = {"train": [], "generate": []}
    try:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write(text)
        env = dict(os.environ)
        env.pop("CHARSTREAM_MODEL", None)
        for r in range(rounds):
            path = os.path.join(tmp, f"model{r}.npz")
            t = time.perf_counter()
            with open(corpus, "rb") as src:
                cat = subprocess.Popen(["cat"], stdin=src, stdout=subprocess.PIPE)
                subprocess.run(cli_command() + ["train", "-", "--model", path], stdin=cat.stdout,
                               stderr=subprocess.DEVNULL, check=True, env=env)
                cat.wait()
            cli = n_train / (time.perf_counter() - t)
            pieces = [text[i:i + 65536] for i in range(0, len(text), 65536)]
            api = timed(lambda: [None for _ in charstream.Trainer(charstream.Model("", 100)).train(pieces)],
                        n_train)
            rows["train"].append((cli, api))

            t = time.perf_counter()
            subprocess.run(cli_command() + ["generate", "--model", path, "--length", str(n_generate),
                                            "--random-seed", "0"],
                           stdout=subprocess.DEVNULL, check=True, env=env)
            cli = n_generate / (time.perf_counter() - t)
            m = load(path)
            api = timed(lambda: [None for _ in m.generate(random_seed=0, length=n_generate)], n_generate)
            rows["generate"].append((cli, api))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def print_cli(rows, n_train, n_generate, rounds):
    print(f"\ncommand line vs API (H=100, subprocess wall time with startup, median of {rounds} rounds)")
    what = {"train": f"cat corpus | charstream train -         ({n_train:,} chars)",
            "generate": f"charstream generate --length {n_generate:,} > /dev/null"}
    for task, r in rows.items():
        ratio = statistics.median(c / a for c, a in r)
        print(f"{task:9}{ratio:7.0%} of API  {statistics.median(c for c, _ in r):11,.0f}/s vs "
              f"{statistics.median(a for _, a in r):11,.0f}/s  {what[task]}")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def bench_memory(text, mb):
    """Train the CLI on an `mb` MB stream through a pipe; sample its RSS every 0.2 s."""
    tmp = tempfile.mkdtemp(prefix="charstream-bench-")
    piece = repeat_to(text, 1 << 16)[:1 << 16].encode("utf-8")
    total = mb << 20
    env = dict(os.environ)
    env.pop("CHARSTREAM_MODEL", None)
    try:
        proc = subprocess.Popen(cli_command() + ["train", "-", "--model", os.path.join(tmp, "m.npz")],
                                stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        sent, samples, done = [0], [], threading.Event()

        def sample():
            while not done.is_set():
                try:
                    samples.append((sent[0], rss_kb(proc.pid)))
                except OSError:
                    return
                time.sleep(0.2)

        threading.Thread(target=sample, daemon=True).start()
        t = time.perf_counter()
        while sent[0] < total:
            proc.stdin.write(piece)
            sent[0] += len(piece)
        proc.stdin.close()
        proc.wait()
        elapsed = time.perf_counter() - t
        done.set()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    after = [kb for s, kb in samples if s >= 1 << 20 and kb]
    base = after[0] if after else 0
    peak = max(after) if after else 0
    print(f"\nmemory: `charstream train -` on a {mb} MB stream ({sent[0] / elapsed / 1e3:,.0f} kB/s): RSS "
          f"{base / 1024:.1f} MB after the first MB, peak {peak / 1024:.1f} MB after it, "
          f"growth {(peak - base) / 1024:.1f} MB ({len(samples)} samples)")


# --- gated cells: charstream's CellKernel against nn.GRU / nn.LSTM ------------------------------

def cell_flops(cell, H, V, task):
    """FLOP per character of the products alone: per layer G*H*H for Whh (forward, dWhh, Whh^T dw in
    training), plus the head's V*H (logits, dWhy, dh)."""
    G = charstream.cells.GATES[cell]
    return (6 if task == "train" else 2) * (G * H * H + V * H)


def train_cell(text, cell, H, n):
    m = charstream.Model(sorted(set(text)), hidden_size=H, seed=0, cell=cell)
    return timed(lambda: [None for _ in charstream.Trainer(m).train([text[:n + 1]])], n)


def generate_cell(text, cell, H, n):
    m = charstream.Model(sorted(set(text)), hidden_size=H, seed=0, cell=cell)
    # length=n samples n characters: islice(generate(), n) would time up to 4,095 more, drawn ahead
    return timed(lambda: [None for _ in m.generate("T", random_seed=0, length=n)], n)


def torch_cell(text, cell, H, n, task, T=25, dtype="float64"):
    """nn.GRU / nn.LSTM, batch 1, one thread (float64 like charstream unless dtype says otherwise):
    Adam over chunks of T, or one step per sample."""
    import torch
    dtype = getattr(torch, dtype)
    V = len(set(text))
    idx = torch.tensor(charstream.Model(sorted(set(text)), hidden_size=8).encode(text[:n + 1]), dtype=torch.int64)
    rnn = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(V, H, dtype=dtype)
    head = torch.nn.Linear(H, V, dtype=dtype)
    eye = torch.eye(V, dtype=dtype)
    if task == "train":
        opt = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=0.002)

        def run():
            state = None
            for s in range(0, n - T, T):
                out, state = rnn(eye[idx[s:s + T]].unsqueeze(1), state)
                loss = torch.nn.functional.cross_entropy(head(out.squeeze(1)), idx[s + 1:s + T + 1], reduction="sum")
                opt.zero_grad()
                loss.backward()
                opt.step()
                state = tuple(x.detach() for x in state) if isinstance(state, tuple) else state.detach()
        return timed(run, n - n % T)

    def sample():
        g, state, ix = torch.Generator().manual_seed(0), None, 0
        with torch.no_grad():
            for _ in range(n):
                o, state = rnn(eye[ix].view(1, 1, V), state)
                ix = int(torch.multinomial(torch.softmax(head(o.view(1, H)), dim=1)[0], 1, generator=g))
    return timed(sample, n)


def gemv_ceiling(cell, H, reps=200):
    """chars/s if sampling a character cost nothing but numpy's one-thread `Whh @ h` (G*H, H) in
    float64, best of five: the bandwidth ceiling once Whh outgrows the caches (every sampled character
    reads all of it)."""
    G = charstream.cells.GATES[cell]
    rng = np.random.default_rng(0)
    W, h, y = rng.standard_normal((G * H, H)), rng.standard_normal(H), np.empty(G * H)

    def run():
        for _ in range(reps):
            np.dot(W, h, out=y)
    return reps / _best(run, 5)


def bench_cells(text, sizes, rounds, use_torch, torch_dtype="float64"):
    V = len(set(text))
    print(f"\ngated cells (one layer, T=25, V={V}, median of {rounds} rounds): chars/s, x torch ({torch_dtype}), "
          f"% of FLOP floor")
    for cell in ("gru", "lstm"):
        for H in sizes:
            for task in ("train", "generate"):
                n = max(int((20000 if task == "train" else 100000) * (128 / H) ** 2), 3000)
                body = repeat_to(text, n + 2)
                ours, theirs, floors = [], [], []
                for _ in range(rounds):
                    # the floor is measured again each round, so that the machine's speed of the moment
                    # moves it with ours (a shared machine's dgemm rate drifts by 20% over minutes)
                    floors.append(dgemm_gflops(tries=2) * 1e9 / cell_flops(cell, H, V, task))
                    ours.append((train_cell if task == "train" else generate_cell)(body, cell, H, n))
                    if use_torch:
                        theirs.append(torch_cell(body, cell, H, max(n // 10, 1000), task, dtype=torch_dtype))
                floor, c = statistics.median(floors), statistics.median(ours)
                share = statistics.median(x / f for x, f in zip(ours, floors))
                ratio = (f"{statistics.median(x / y for x, y in zip(ours, theirs)):6.1f}x torch "
                         f"({statistics.median(theirs):9,.0f}/s)" if theirs else "      - (no torch)")
                gemv = f"  Whh@h alone {gemv_ceiling(cell, H):9,.0f}/s" if task == "generate" else ""
                print(f"{cell:5}{task:9}{H:>5}{c:11,.0f}/s  {ratio}  floor {floor:9,.0f}/s {share:5.0%}{gemv}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=None, help="text file (default: the shipped corpus)")
    ap.add_argument("--hidden-sizes", default="100,256,512",
                    help="comma-separated H values of the rnn rows ('' skips them)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chars", type=int, default=100_000, help="characters charstream trains per round at H=100")
    ap.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if it is installed")
    ap.add_argument("--no-cli", action="store_true", help="skip the command-line rows")
    ap.add_argument("--cli-chars", type=int, default=1_000_000, help="characters for the CLI rows")
    ap.add_argument("--memory-mb", type=int, default=0, help="also measure RSS over a stream this big")
    ap.add_argument("--cell-sizes", default="128,256,512", help="H values of the gru and lstm rows ('' skips them)")
    ap.add_argument("--torch-dtype", default="float64", choices=("float64", "float32"),
                    help="PyTorch's precision in the cell rows (charstream is float64 throughout)")
    args = ap.parse_args(argv)
    text = corpus_text(args.corpus)
    use_torch = not args.no_torch and peers.torch_available()
    if use_torch:
        import torch
        torch.set_num_threads(1)
    if args.hidden_sizes:
        gflops = dgemm_gflops()
        results = {H: bench_size(text, H, args.rounds, args.chars, use_torch)
                   for H in (int(h) for h in args.hidden_sizes.split(","))}
        print_table(results, len(set(text)), gflops, args.rounds)
    if args.cell_sizes:
        bench_cells(text, [int(h) for h in args.cell_sizes.split(",")], args.rounds, use_torch, args.torch_dtype)
    if not use_torch:
        print("(PyTorch not installed: its columns are left out)")
    if not args.no_cli:
        rows = bench_cli(text, args.cli_chars, args.cli_chars, args.rounds)
        print_cli(rows, args.cli_chars, args.cli_chars, args.rounds)
    if args.memory_mb:
        bench_memory(text, args.memory_mb)


if __name__ == "__main__":
    main()
