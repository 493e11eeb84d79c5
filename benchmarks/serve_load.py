"""Load test: 32 concurrent streaming clients of `charstream serve` on 127.0.0.1 for 30 s.

    python benchmarks/serve_load.py [--model PATH] [--clients 32] [--seconds 30] [--max-tokens 2000]
        [--cell lstm --hidden-size 512] [--threads 1]

Starts the server as serve_bench.py does (a subprocess, port 0, the default `--parallel` of 32 unless
--parallel is given: every client must be admitted). Each client thread streams `POST /v1/completions`
(stream=true, max_tokens=--max-tokens) again and again until the time is up, on a new connection each
time. Errors are non-200 answers, streams that end without `data: [DONE]` or with fewer characters
than asked, error events and socket failures. Prints total chars/s, first-character latency (median,
p99), the server's RSS (VmRSS) at start, every 5 s and at the end, and its exit code after SIGTERM.
With --cell or --hidden-size other than rnn / 100 the model is untrained, of that shape (serve_bench.py).
"""
import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from serve_bench import (CORPUS, TIMEOUT, ServerProcess, cpu_name, percentiles, train_model,  # noqa: E402
                         untrained_model)


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def stream_once(server, max_tokens, seed):
    """One streamed completion: (chars, seconds to the first text byte); RuntimeError naming what broke."""
    conn = server.connection()
    try:
        body = json.dumps({"prompt": "", "max_tokens": max_tokens, "stream": True, "seed": seed})
        t = time.perf_counter()
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}")
        chars, first, done = 0, None, False
        for _ in range(max_tokens + 100):      # at most one event per character, and a few more
            line = resp.readline()
            if not line:
                break
            if line == b"data: [DONE]\n":
                done = True
                resp.read()    # to the end of the HTTP response (its last chunk), as a client should
                break
            if line.startswith(b"data: {"):
                event = json.loads(line[6:])
                if "error" in event:
                    raise RuntimeError("error event")
                text = event["choices"][0]["text"] if event["choices"] else ""
                if text and first is None:
                    first = time.perf_counter() - t
                chars += len(text)
        if not done:
            raise RuntimeError("stream ended without [DONE]")
        if chars != max_tokens:
            raise RuntimeError(f"stream held {chars} chars, not {max_tokens}")
        return chars, first
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a trained model file (default: train one on 200k chars of tiny-shakespeare)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--max-tokens", type=int, default=2000)
    ap.add_argument("--parallel", type=int, default=None, help="the server's --parallel (default: its own, 32)")
    ap.add_argument("--cell", default="rnn")
    ap.add_argument("--hidden-size", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None, help="the server's --threads")
    args = ap.parse_args()

    print(f"CPU: {cpu_name()}  ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None and (args.cell, args.hidden_size) != ("rnn", 100):
            path = os.path.join(tmp, "load.npz")
            untrained_model(path, args.cell, args.hidden_size)
            print(f"untrained {args.cell} H={args.hidden_size}")
        if path is None:
            path = os.path.join(tmp, "load.npz")
            train_model(path)
            print(f"trained H=100 on 200,000 chars of {CORPUS}")
        server = ServerProcess(path, args.parallel, args.threads)
        try:
            print(f"server: {server.url} (pid {server.pid}), {args.clients} clients for {args.seconds:g} s, "
                  f"max_tokens={args.max_tokens}")
            lock = threading.Lock()
            chars, streams, latencies, errors = [0], [0], [], collections.Counter()
            end = time.monotonic() + args.seconds

            def client(k):
                i = 0
                while time.monotonic() < end:
                    i += 1
                    try:
                        n, first = stream_once(server, args.max_tokens, k * 100_000 + i)
                    except (OSError, RuntimeError, ValueError, KeyError, IndexError) as e:
                        with lock:
                            errors[f"{type(e).__name__}: {e}"] += 1
                        time.sleep(0.05)
                        continue
                    with lock:
                        chars[0] += n
                        streams[0] += 1
                        latencies.append(first)

            rss = [(0.0, rss_kb(server.pid))]
            threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(args.clients)]
            t0 = time.monotonic()
            for th in threads:
                th.start()
            while time.monotonic() < end:
                time.sleep(min(5, max(0, end - time.monotonic())))
                rss.append((time.monotonic() - t0, rss_kb(server.pid)))
            for th in threads:
                th.join(TIMEOUT + 10)   # each finishes the stream it is on
            elapsed = time.monotonic() - t0
            rss.append((elapsed, rss_kb(server.pid)))
            alive = sum(th.is_alive() for th in threads)

            print(f"streams completed: {streams[0]:,}  characters: {chars[0]:,}  in {elapsed:.1f} s")
            print(f"throughput: {chars[0] / elapsed:,.0f} chars/s total, {chars[0] / elapsed / args.clients:,.0f} "
                  f"per client")
            if latencies:
                med, p99 = percentiles(latencies)
                print(f"first character: median {med * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, max "
                      f"{max(latencies) * 1e3:.2f} ms over {len(latencies):,} streams")
            print(f"errors: {sum(errors.values())}" + "".join(f"\n  {n} x {e}" for e, n in errors.most_common()))
            print("server RSS (VmRSS): " + ", ".join(f"{t:.0f}s {kb / 1024:.1f} MB" for t, kb in rss if kb))
            if alive:
                print(f"{alive} client threads still running after the join timeout")
        finally:
            code = server.stop()
            print(f"server stopped with SIGTERM: exit code {code}")


if __name__ == "__main__":
    main()
