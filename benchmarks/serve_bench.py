"""Benchmark: one streaming client of `charstream serve` against `model.generate()`, and first-character latency.

    python benchmarks/serve_bench.py [--model PATH] [--chars 2000000] [--rounds 3] [--requests 200]

Trains a small default model (H=100) on the first ~200k characters of tiny-shakespeare unless
--model is given, starts `python -m charstream serve --model P --port 0` as a subprocess on
127.0.0.1 and reads its URL from stderr. Rounds alternate (a) `model.generate()` in this process
and (b) one client reading `GET /generate` (no length: endless, the client closes after --chars
bytes; the server caps `length` at 1,000,000) with http.client, so a noisy machine moves both
alike; the medians and the median ratio b/a are printed. First-character latency is the time from
sending a request (on a connection already open) to the first text byte, over --requests requests
of `/generate?length=1` and of streamed `/v1/completions` with max_tokens=1.
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

    def __init__(self, model_path, parallel=None):
        cmd = [sys.executable, "-m", "charstream", "serve", "--model", model_path, "--port", "0"]
        if parallel is not None:
            cmd += ["--parallel", str(parallel)]
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
    args = ap.parse_args()

    from charstream.model import Model
    print(f"CPU: {cpu_name()}  ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            path = os.path.join(tmp, "bench.npz")
            t = time.perf_counter()
            train_model(path)
            print(f"trained H=100 on 200,000 chars of {CORPUS} in {time.perf_counter() - t:.1f} s")
        model = Model.load(path)
        print(f"model: {path}  V={model.vocab_size} H={model.hidden_size}")
        server = ServerProcess(path)
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
