"""The server on a real socket (uvicorn, 127.0.0.1, a free port): disconnects, the bound on parallel
generations, model reloads, the official `openai` client, and signals to a `charstream serve` process."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from serving import require  # noqa: E402

require("starlette")
require("uvicorn")

from charstream.cli import main  # noqa: E402
from charstream.server.app import create_app  # noqa: E402
from charstream.server.models import ModelRegistry  # noqa: E402
from charstream.server.run import bind  # noqa: E402
from charstream import load  # noqa: E402
from serving import TIMEOUT, dechunk, open_stream, read_to_end, running, train_small, wait_until  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, shakespeare):
    path = tmp_path_factory.mktemp("serve") / "bard.npz"
    train_small(path, shakespeare)
    return path


def _expected(model, prompt, n, random_seed, **kw):
    blocks = model.generate_blocks(prompt, 1.0, random_seed, **kw)
    out = ""
    while len(out) < n:
        out += next(blocks)
    return out[:n]


def _tracking(app_module, monkeypatch):
    """Every request's Choices from now on, noting when they are closed and any piece read after that."""
    tracked = []

    class Tracked(app_module.Choices):
        def __init__(self, *a):
            super().__init__(*a)
            self.closed_at, self.after_close = threading.Event(), 0
            tracked.append(self)

        async def __aiter__(self):
            async for piece in super().__aiter__():
                self.after_close += self.closed_at.is_set()
                yield piece

        def close(self):
            super().close()
            self.closed_at.set()

    monkeypatch.setattr(app_module, "Choices", Tracked)
    return tracked


@pytest.mark.parametrize("endpoint", ["generate", "sse"])
def test_a_client_that_leaves_stops_its_generation(model_path, endpoint, monkeypatch):
    import charstream.server.app as app_module
    tracked = _tracking(app_module, monkeypatch)
    app = create_app(model_path, parallel=1)
    slots = app.state.slots
    with running(app) as base:
        for _ in range(3):   # each time the one slot comes back
            if endpoint == "generate":   # no length: it writes until the client leaves
                s, status, _, _ = open_stream(base, "/generate?seed=To+be")
            else:   # the most it may ask for, on the sampler that takes longest (the Python path)
                s, status, _, _ = open_stream(base, "/v1/completions", {"prompt": "To be", "stream": True,
                                                                        "max_tokens": 1_000_000, "top_p": 0.9})
            assert status == 200
            start = slots.produced
            wait_until(lambda: slots.produced > start + 1000, "the generation to be under way")
            assert slots.active == 1
            s.close()
            wait_until(lambda: slots.active == 0, "the generation to stop after the client left")
            assert slots.produced - start < 1_000_000, "the generation ran to its end"
            # the slot comes back only after the generation is closed: nothing can draw from it again
            assert tracked[-1].closed_at.is_set(), "a generation was left open after its client left"
            assert tracked[-1].after_close == 0
            scheduler = app.state.schedulers.current
            wait_until(lambda: scheduler.running == 0, "its lane to leave the batch")


def test_generations_beyond_the_bound_get_503_at_once(model_path):
    app = create_app(model_path, parallel=2)
    with running(app) as base:
        a, status_a, _, _ = open_stream(base, "/generate?seed=a")
        b, status_b, _, _ = open_stream(base, "/generate?seed=b")
        assert (status_a, status_b) == (200, 200)
        for target, body in [("/generate?seed=c", None), ("/v1/completions", {"prompt": "c", "max_tokens": 5})]:
            c, status, head, rest = open_stream(base, target, body)
            assert status == 503
            assert "\r\nretry-after: 1\r\n" in head.lower() + "\r\n"
            err = json.loads(rest + read_to_end(c))["error"]
            c.close()
            assert err["code"] == "server_busy" and err["type"] == "server_error"
            assert err["message"] == "the server is busy: 2 generations are running; try again"
        # what does not generate is still answered
        c, status, _, _ = open_stream(base, "/v1/models")
        assert status == 200
        c.close()
        a.close()
        wait_until(lambda: app.state.slots.active == 1, "a slot to come back")
        c, status, _, rest = open_stream(base, "/generate?seed=To+be&length=50")
        assert status == 200
        body, complete = dechunk(rest + read_to_end(c))
        assert complete and len(body.decode()) == 55
        c.close()
        b.close()


def test_finite_streams_end_with_a_complete_chunked_body(model_path):
    model = load(model_path)
    with running(create_app(model_path)) as base:
        s, status, head, rest = open_stream(base, "/generate?seed=To+be&length=3000&random_seed=9")
        assert status == 200 and "transfer-encoding: chunked" in head.lower()
        body, complete = dechunk(rest + read_to_end(s))
        s.close()
    assert complete
    assert body.decode() == "To be" + _expected(model, "To be", 3000, 9)


def test_a_new_model_file_is_used_from_the_next_request(tmp_path, shakespeare):
    path = tmp_path / "live.npz"
    first = train_small(path, shakespeare[:5000])
    lines = []
    registry = ModelRegistry(path, log=lines.append)
    app = create_app(path, registry=registry)
    from starlette.testclient import TestClient
    with TestClient(app, base_url="http://127.0.0.1") as client:
        def text():
            r = client.post("/v1/completions", json={"prompt": "To be", "max_tokens": 300, "seed": 1})
            assert r.status_code == 200
            return r.json()["choices"][0]["text"]
        assert text() == _expected(first, "To be", 300, 1)
        assert client.get("/info").json()["chars_trained"] == first.state.chars_trained

        second = train_small(path, shakespeare, hidden_size=24, seed=5, repeat=2)   # saved atomically
        assert text() == _expected(second, "To be", 300, 1) != _expected(first, "To be", 300, 1)
        facts = client.get("/info").json()
        assert (facts["hidden_size"], facts["chars_trained"]) == (24, second.state.chars_trained)
        assert lines == [f"reloaded {path} ({second.state.chars_trained:,} characters trained)"]

        # a corrupt file appears (renamed over it, as a save is): the last good model stays, one line
        tmp = tmp_path / "junk.tmp"
        tmp.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
        os.replace(tmp, path)
        for _ in range(3):
            assert text() == _expected(second, "To be", 300, 1)
            assert client.get("/info").json()["hidden_size"] == 24
        assert len(lines) == 2
        assert lines[1].startswith(f"{path}: corrupt model file") and lines[1].endswith(
            "; still serving the last good model")
        # the file goes away: the same, one more line
        os.unlink(path)
        assert text() == _expected(second, "To be", 300, 1)
        assert text() == _expected(second, "To be", 300, 1)
        assert lines[2:] == [f"{path}: no such model file; still serving the last good model"]
        # a good one comes back
        third = train_small(path, shakespeare[:3000], hidden_size=16)
        assert text() == _expected(third, "To be", 300, 1)
        assert len(lines) == 4 and lines[3].startswith("reloaded")


def test_the_official_openai_client_works_unchanged(model_path):
    openai = require("openai", "pip install openai (in the test extra)")
    model = load(model_path)
    with running(create_app(model_path)) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", timeout=TIMEOUT, max_retries=0)
        [m] = client.models.list().data
        assert m.id == "bard" and m.owned_by == "charstream"
        r = client.completions.create(model="bard", prompt="To be", max_tokens=200, seed=4)
        assert r.choices[0].text == _expected(model, "To be", 200, 4)
        assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 200
        chunks = list(client.completions.create(model="bard", prompt="To be", max_tokens=200, seed=4, stream=True))
        assert "".join(c.choices[0].text for c in chunks) == r.choices[0].text
        assert chunks[-1].choices[0].finish_reason == "length"
        stop = r.choices[0].text[50:53]
        cut = client.completions.create(model="bard", prompt="To be", max_tokens=200, seed=4, stop=[stop])
        assert cut.choices[0].text == r.choices[0].text[:r.choices[0].text.find(stop)]
        assert cut.choices[0].finish_reason == "stop"
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(model="bard", prompt="To be", max_tokens=-1)
        assert e.value.status_code == 400 and "max_tokens must be between 0 and" in e.value.message
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(model="gpt-3.5-turbo-instruct", prompt="x")
        assert e.value.code == "model_not_found"


def _serve(*args):
    """`charstream serve` as a process on a free port: (process, base URL from its first line)."""
    proc = subprocess.Popen([sys.executable, "-m", "charstream", "serve", "--port", "0", *map(str, args)],
                            cwd=DATA, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stderr.readline().decode()   # bounded: the process prints it or dies (then b"")
    m = re.fullmatch(r"serving on (http://127\.0\.0\.1:(\d+))\n", line)
    if not m:
        proc.kill()
        proc.wait(TIMEOUT)
        raise AssertionError(f"unexpected first line {line!r}; stderr: {proc.stderr.read()!r}")
    assert int(m.group(2)) > 0
    return proc, m.group(1)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_signals_shut_the_server_down_cleanly(model_path, sig, code):
    proc, base = _serve("--model", model_path)
    try:
        s, status, _, rest = open_stream(base, "/generate?seed=To+be")   # endless: shutdown must end it
        assert status == 200
        rest += s.recv(1000)
        proc.send_signal(sig)
        body, complete = dechunk(rest + read_to_end(s, limit=1 << 30))   # the stream ends, properly
        s.close()
        assert complete
        assert proc.wait(TIMEOUT + 10) == code
        err = proc.stderr.read().decode()
        assert "Traceback" not in err and "Error" not in err, err
        assert proc.stdout.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close()
        proc.stderr.close()


def invoke(*args):
    return CliRunner().invoke(main, ["serve", *map(str, args)], catch_exceptions=False)


def test_serve_refuses_a_missing_or_corrupt_model_and_a_taken_port(tmp_path, model_path):
    r = invoke("--model", tmp_path / "none.npz", "--port", 0)
    assert r.exit_code == 1
    assert r.output == f"Error: no model at {tmp_path / 'none.npz'}: train one first, e.g. " \
                       f"`charstream corpus | charstream train -`\n"
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nonsense")
    r = invoke("--model", bad, "--port", 0)
    assert r.exit_code == 1 and r.output == f"Error: {bad}: not a charstream model (not an .npz archive)\n"
    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        r = invoke("--model", model_path, "--port", port)
    finally:
        taken.close()
    assert r.exit_code == 1 and r.output == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    r = invoke("--model", model_path, "--port", 70000)
    assert r.exit_code == 2 and "Invalid value for '--port'" in r.output
    r = invoke("--model", model_path, "--parallel", 0)
    assert r.exit_code == 2 and "Invalid value for '--parallel'" in r.output


def test_loopback_is_told_from_the_rest():
    from charstream.server.run import is_loopback

    class Fake:
        def __init__(self, addr):
            self.addr = addr

        def getsockname(self):
            return (self.addr, 1)
    assert is_loopback(Fake("127.0.0.1")) and is_loopback(Fake("::1")) and is_loopback(Fake("127.3.4.5"))
    assert not is_loopback(Fake("0.0.0.0")) and not is_loopback(Fake("192.168.1.2")) and not is_loopback(Fake("::"))
