"""Benchmark: one streaming client of `charstream serve` against `model.generate()`, many clients stepped together, and first-character latency.

    python benchmarks/serve_bench.py [--model PATH] [--chars 2000000] [--rounds 3] [--requests 200]
        [--cell lstm --hidden-size 512] [--clients 32] [--request-chars 4000] [--seconds 10] [--threads 1]

Trains a small default model (H=100) on the first ~200k characters of tiny-shakespeare unless
--model is given, starts `python -m charstream serve --model P --port 0` as a subprocess on
127.0.0.1 and reads its URL from stderr. Rounds alternate (a) `model.generate()` in this process
and (b) one client reading `GET /generate` (no length: endless, the client closes after --chars
bytes; the server caps `length` at 1,000,000) with http.client, so a noisy machine moves both
alike; the medians and the median ratio b/a are printed. First-character latency is the time from
sending a request (on a connection already open) to the first text byte, over --requests requests
of `/generate?length=1` and of streamed `/v1/completions` with max_tokens=1.

Batching rows (issue 19): (e) one client repeating `GET /generate?length=--request-chars` (on one
connection kept open, as a client library's session does) against `model.generate(length=...)` in
this process, alternating in --rounds rounds of --seconds in all, (f) --clients clients doing the
same at once for --seconds: their total chars/s and its ratio to (e). With --cell or --hidden-size other than the
default rnn of H=100, the model is an untrained one of that shape over the corpus's characters
(speed does not depend on what the weights are).
"""
import argparse
import http.client
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

TIMEOUT = 30   # seconds any socket operation or wait may take
CORPUS = "/work/shared/corpora/tinyshakespeare.txt"


def cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def train_model(path, corpus=CORPUS, chars=200_000, hidden_size=100):
    """A default-sized model trained on the first `chars` characters of `corpus`, saved to path."""
    from charstream.model import Model
    from charstream.trainer import Trainer
    with open(corpus, encoding="utf-8") as f:
        text = f.read(chars)
    model = Model(sorted(set(text)), hidden_size=hidden_size, seed=0)
    for _ in Trainer(model).train([text]):
        pass
    model.save(path)
    return model


class ServerProcess:
    """`python -m charstream serve` in a subprocess on 127.0.0.1, port 0; `url` once it says so."""

    def __init__(self, model_path, parallel=None, threads=None):
        cmd = [sys.executable, "-m", "charstream", "serve", "--model", model_path, "--port", "0"]
        if parallel is not None:
            cmd += ["--parallel", str(parallel)]
        if threads is not None:
            cmd += ["--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.url, self.log = None, []
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:      # readline blocks, but the server prints or exits
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line.rstrip())
            if line.startswith("serving on "):
                self.url = line.split()[-1]
                break
        if self.url is None:
            self.stop()
            raise RuntimeError(f"the server did not start: {self.log}")
        host, port = self.url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)

    @property
    def pid(self):
        return self.proc.pid

    def connection(self):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        conn.connect()
        return conn

    def stop(self):
        """SIGTERM, then wait (SIGKILL after TIMEOUT s): the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)
        return self.proc.returncode


def in_process(model, n):
    """chars/s of `model.generate()` over n characters."""
    it = model.generate(random_seed=1)
    t = time.perf_counter()
    for _ in itertools.islice(it, n):
        pass
    return n / (time.perf_counter() - t)


def one_client(server, n):
    """chars/s of one client reading `GET /generate` until n bytes (ASCII corpus: bytes = chars)."""
    conn = server.connection()
    t = time.perf_counter()
    conn.request("GET", "/generate?random_seed=1")
    resp = conn.getresponse()
    assert resp.status == 200, f"/generate answered {resp.status}"
    got = 0
    while got < n:
        chunk = resp.read1(65536)
        if not chunk:
            raise RuntimeError(f"the stream ended after {got} bytes")
        got += len(chunk)
    rate = got / (time.perf_counter() - t)
    conn.close()
    return rate


def untrained_model(path, cell, hidden_size, corpus=CORPUS, chars=200_000):
    """A model of the given shape over the corpus's first `chars` characters, untrained, saved to path."""
    from charstream.model import Model
    with open(corpus, encoding="utf-8") as f:
        text = f.read(chars)
    model = Model(sorted(set(text)), hidden_size=hidden_size, seed=0, cell=cell)
    model.save(path)
    return model


def in_process_requests(model, chars, seconds):
    """chars/s of `model.generate(length=chars)` repeated (new seeds) for about `seconds`."""
    t, n, k = time.perf_counter(), 0, 0
    while time.perf_counter() - t < seconds or k == 0:
        k += 1
        n += sum(1 for _ in model.generate(random_seed=k, length=chars))
    return n / (time.perf_counter() - t)


def request_once(conn, chars, seed):
    """One `GET /generate?length=chars` on an open connection, read to its end: the characters received."""
    conn.request("GET", f"/generate?length={chars}&random_seed={seed}")
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"/generate answered {resp.status}")
    return len(resp.read())


def clients_together(server, clients, chars, seconds):
    """Total chars/s of `clients` threads each repeating `GET /generate?length=chars` for `seconds`, on
    a connection of its own kept open (as an HTTP client library's session keeps it)."""
    import threading
    got, errors, lock = [0], [], threading.Lock()
    end = time.monotonic() + seconds

    def client(k):
        i = 0
        conn = server.connection()
        try:
            while time.monotonic() < end:
                i += 1
                try:
                    n = request_once(conn, chars, k * 100_000 + i)
                except (OSError, RuntimeError, http.client.HTTPException) as e:
                    errors.append(e)
                    return
                with lock:
                    got[0] += n
        finally:
            conn.close()
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join(seconds + TIMEOUT)
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed: {errors[0]}")
    return got[0] / (time.perf_counter() - t)


def first_generate(server):
    """Seconds from sending `GET /generate?length=1` to the first body byte."""
    conn = server.connection()
    t = time.perf_counter()
    conn.request("GET", "/generate?length=1")
    resp = conn.getresponse()
    assert resp.status == 200, f"/generate answered {resp.status}"
    chunk = b""
    while not chunk:
        chunk = resp.read1(1)
        if chunk == b"" and resp.isclosed():
            raise RuntimeError("the stream ended before a character")
    dt = time.perf_counter() - t
    resp.read()
    conn.close()
    return dt


def first_text(resp, limit=10_000):
    """Read server-sent events from resp until one carries non-empty choice text: (text, events read)."""
    for i in range(limit):
        line = resp.readline()
        if not line:
            raise RuntimeError("the stream ended before any text")
        if line.startswith(b"data: {"):
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"error event: {event['error']}")
            if event["choices"] and event["choices"][0]["text"]:
                return event["choices"][0]["text"], i
    raise RuntimeError(f"no text in {limit} lines")


def first_completion(server):
    """Seconds from sending a streamed `POST /v1/completions` (max_tokens=1) to the first text byte."""
    conn = server.connection()
    body = json.dumps({"prompt": "", "max_tokens": 1, "stream": True})
    t = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, f"/v1/completions answered {resp.status}"
    first_text(resp)
    dt = time.perf_counter() - t
    resp.read()
    conn.close()
    return dt


def percentiles(xs):
    xs = sorted(xs)
    return statistics.median(xs), xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a trained model file (default: train one on 200k chars of tiny-shakespeare)")
    ap.add_argument("--chars", type=int, default=2_000_000, help="characters per throughput round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200, help="requests per latency figure")
    ap.add_argument("--cell", default="rnn", help="with --hidden-size: an untrained model of this cell")
    ap.add_argument("--hidden-size", type=int, default=100)
    ap.add_argument("--clients", type=int, default=32, help="clients of row (f)")
    ap.add_argument("--request-chars", type=int, default=4000, help="characters per request in rows (e), (f)")
    ap.add_argument("--seconds", type=float, default=10, help="seconds of rows (e) and (f), each")
    ap.add_argument("--threads", type=int, default=None, help="the server's --threads")
    ap.add_argument("--skip-latency", action="store_true", help="rows (e) and (f) only, after (a)-(c)")
    args = ap.parse_args()

    from charstream.model import Model
    print(f"CPU: {cpu_name()}  ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None and (args.cell, args.hidden_size) != ("rnn", 100):
            path = os.path.join(tmp, "bench.npz")
            untrained_model(path, args.cell, args.hidden_size)
            print(f"untrained {args.cell} H={args.hidden_size} over the characters of {CORPUS}")
        if path is None:
            path = os.path.join(tmp, "bench.npz")
            t = time.perf_counter()
            train_model(path)
            print(f"trained H=100 on 200,000 chars of {CORPUS} in {time.perf_counter() - t:.1f} s")
        model = Model.load(path)
        print(f"model: {path}  {model.cell} V={model.vocab_size} H={model.hidden_size} {model.dtype}")
        server = ServerProcess(path, max(32, args.clients), args.threads)
        try:
            print(f"server: {server.url} (pid {server.pid})")
            one_client(server, 10_000)   # warm up both sides
            in_process(model, 10_000)
            a, b, ratio = [], [], []
            for r in range(args.rounds):
                ra = in_process(model, args.chars)
                rb = one_client(server, args.chars)
                a.append(ra), b.append(rb), ratio.append(rb / ra)
                print(f"  round {r + 1}: generate() {ra:,.0f} chars/s   client {rb:,.0f} chars/s   b/a {rb / ra:.2f}")
            print(f"(a) model.generate() in-process: {statistics.median(a):,.0f} chars/s (median of {args.rounds} "
                  f"x {args.chars:,} chars)")
            print(f"(b) one streaming client, GET /generate: {statistics.median(b):,.0f} chars/s")
            print(f"(c) ratio b/a: {statistics.median(ratio):.2f} (median of per-round ratios; target >= 0.5)")
            c = args.request_chars
            es, ones, ratios = [], [], []
            for r in range(args.rounds):    # alternating, as (a) and (b): the machine's noise moves both
                es.append(in_process_requests(model, c, args.seconds / args.rounds))
                ones.append(clients_together(server, 1, c, args.seconds / args.rounds))
                ratios.append(ones[-1] / es[-1])
            e, one = statistics.median(es), statistics.median(ones)
            print(f"(e) {c:,}-character requests: model.generate(length={c}) {e:,.0f} chars/s, one client "
                  f"{one:,.0f} chars/s, ratio {statistics.median(ratios):.2f} (median of {args.rounds} "
                  f"alternating rounds: {', '.join(f'{x:.2f}' for x in ratios)}; target >= 0.8)")
            many = clients_together(server, args.clients, c, args.seconds)
            print(f"(f) {args.clients} clients at once: {many:,.0f} chars/s in all, {many / one:.2f}x one client "
                  f"(target for the LSTM of H=512: >= 8x)")
            if args.skip_latency:
                return
            for name, f in (("GET /generate?length=1", first_generate),
                            ("POST /v1/completions stream", first_completion)):
                f(server)
                ts = [f(server) for _ in range(args.requests)]
                med, p99 = percentiles(ts)
                print(f"(d) first character, {name}: median {med * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, "
                      f"max {max(ts) * 1e3:.2f} ms over {args.requests} requests (target 10 ms)")
        finally:
            code = server.stop()
            print(f"server stopped with SIGTERM: exit code {code}")


if __name__ == "__main__":
    main()
