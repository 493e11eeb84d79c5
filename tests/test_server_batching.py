"""Continuous batching on a real socket (127.0.0.1): `n` choices, many concurrent raw clients stepped
together, each text what it is alone, clients that drop mid-batch, kernels built once per model."""
import concurrent.futures
import itertools
import json
import os
import threading

import pytest

from serving import require  # noqa: E402

require("starlette")
require("uvicorn")

from charstream import load  # noqa: E402
from charstream.server.app import create_app  # noqa: E402
from charstream.server.models import ModelRegistry  # noqa: E402
from serving import TIMEOUT, dechunk, open_stream, read_to_end, running, train_small, wait_until  # noqa: E402


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, shakespeare):
    path = tmp_path_factory.mktemp("batch") / "bard.npz"
    train_small(path, shakespeare, hidden_size=24)
    return path


@pytest.fixture(scope="module")
def lstm_path(tmp_path_factory, shakespeare):
    """A float64 LSTM: generated on LaneKernel lanes (the rnn's take turns on Kernel)."""
    from charstream.model import Model
    from charstream.trainer import Trainer
    path = tmp_path_factory.mktemp("batch") / "lstm.npz"
    m = Model(sorted(set(shakespeare)), hidden_size=20, seed=1, cell="lstm")
    list(Trainer(m).train([shakespeare[:20000]]))
    m.save(path)
    return path


def alone(model, prompt, n, seed, **kw):
    return "".join(itertools.islice(model.generate(prompt, random_seed=seed, length=n, **kw), n))


def sse(raw):
    """The events of a server-sent stream (its chunked body), [DONE] last."""
    events = raw.decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""], events[-3:]
    return [json.loads(e[6:]) for e in events[:-2]]


def post(base, body):
    """(status, body bytes) of a POST /v1/completions, its chunked transfer undone."""
    s, status, head, rest = open_stream(base, "/v1/completions", body)
    raw = rest + read_to_end(s)
    s.close()
    if "transfer-encoding: chunked" in head.lower():
        raw, complete = dechunk(raw)
        assert complete
    return status, raw


@pytest.mark.parametrize("path", ["model_path", "lstm_path"])
def test_n_choices_are_the_texts_of_their_seeds_alone(request, path):
    path = request.getfixturevalue(path)
    model = load(path)
    with running(create_app(path, parallel=8)) as base:
        status, raw = post(base, {"prompt": "To be", "max_tokens": 300, "seed": 41, "n": 4, "best_of": 4,
                                  "temperature": 0.9})
        assert status == 200
        body = json.loads(raw)
        assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
        texts = [c["text"] for c in body["choices"]]
        assert texts == [alone(model, "To be", 300, 41 + i, temperature=0.9) for i in range(4)]
        assert len(set(texts)) == 4 and all(c["finish_reason"] == "length" for c in body["choices"])
        assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 1200, "total_tokens": 1205}
        # choice 2 of seed 41 is n=1 with seed 43
        status, raw = post(base, {"prompt": "To be", "max_tokens": 300, "seed": 43, "temperature": 0.9})
        assert json.loads(raw)["choices"][0]["text"] == texts[2]
        # streamed: each chunk one choice, its index; put together, the same texts
        status, raw = post(base, {"prompt": "To be", "max_tokens": 300, "seed": 41, "n": 4, "temperature": 0.9,
                                  "stream": True, "stream_options": {"include_usage": True}})
        events = sse(raw)
        got, finishes = ["", "", "", ""], {}
        for e in events[:-1]:
            [c] = e["choices"]
            got[c["index"]] += c["text"]
            if c["finish_reason"]:
                finishes[c["index"]] = c["finish_reason"]
        assert got == texts and finishes == {i: "length" for i in range(4)}
        assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 1200
        # the seed wraps at 2**64: choice 1 of the largest seed is seed 0
        status, raw = post(base, {"prompt": "To", "max_tokens": 50, "seed": 2**64 - 1, "n": 2})
        assert json.loads(raw)["choices"][1]["text"] == alone(model, "To", 50, 0)


def test_n_with_stop_sequences_and_greedy(model_path):
    model = load(model_path)
    with running(create_app(model_path)) as base:
        full = alone(model, "To be", 200, 5)
        stop = full[60:63]
        status, raw = post(base, {"prompt": "To be", "max_tokens": 200, "seed": 5, "n": 3, "stop": stop})
        choices = json.loads(raw)["choices"]
        assert choices[0]["text"] == full[:full.find(stop)] and choices[0]["finish_reason"] == "stop"
        status, raw = post(base, {"prompt": "To be", "max_tokens": 80, "temperature": 0, "n": 3})
        choices = json.loads(raw)["choices"]
        assert len({c["text"] for c in choices}) == 1 == len({alone(model, "To be", 80, None, sampler="greedy")}
                                                             | {choices[0]["text"]})


def test_n_beyond_the_free_slots_gets_503_and_takes_none(model_path):
    app = create_app(model_path, parallel=4)
    with running(app) as base:
        a, status, _, _ = open_stream(base, "/generate?seed=a")       # endless: holds one slot
        assert status == 200
        status, raw = post(base, {"prompt": "x", "max_tokens": 5, "n": 4})
        assert status == 503 and json.loads(raw)["error"]["code"] == "server_busy"
        assert app.state.slots.active == 1
        status, raw = post(base, {"prompt": "x", "max_tokens": 5, "n": 3})
        assert status == 200 and len(json.loads(raw)["choices"]) == 3
        a.close()
        wait_until(lambda: app.state.slots.active == 0, "the slot to come back")


@pytest.mark.parametrize("path", ["model_path", "lstm_path"])
def test_many_concurrent_clients_each_get_their_text_alone(request, path):
    path = request.getfixturevalue(path)
    model = load(path)
    app = create_app(path, parallel=24)
    specs = [dict(prompt="ROMEO"[:1 + k % 5], max_tokens=150 + 37 * k, seed=k, temperature=0.6 + 0.05 * k,
                  **({"top_k": 4} if k % 3 == 1 else {}), **({"top_p": 0.8} if k % 7 == 3 else {}),
                  stream=k % 2 == 0) for k in range(24)]

    def client(spec):
        status, raw = post(base, spec)
        assert status == 200, raw[:300]
        if spec["stream"]:
            return "".join(e["choices"][0]["text"] for e in sse(raw) if e["choices"])
        return json.loads(raw)["choices"][0]["text"]

    with running(app) as base:
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            texts = list(pool.map(client, specs, timeout=60))
        scheduler = app.state.schedulers.current
        assert app.state.schedulers.built == 1      # one kernel for every request of this model
    for spec, text in zip(specs, texts):
        kw = {k: spec[k] for k in ("top_k", "top_p") if k in spec}
        assert text == alone(model, spec["prompt"], spec["max_tokens"], spec["seed"],
                             temperature=spec["temperature"], **kw), spec
    assert scheduler.rounds > 0


def test_a_client_dropping_mid_batch_leaves_the_others_going(model_path):
    model = load(model_path)
    app = create_app(model_path, parallel=6)
    with running(app) as base:
        endless = [open_stream(base, f"/generate?seed=To&random_seed={k}") for k in range(3)]
        assert all(status == 200 for _, status, _, _ in endless)
        results = {}

        def finite(k):
            s, status, _, rest = open_stream(base, f"/generate?seed=To&length=4000&random_seed={10 + k}")
            results[k] = dechunk(rest + read_to_end(s))
            s.close()

        threads = [threading.Thread(target=finite, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for s, _, _, _ in endless[:2]:      # two clients leave in the middle
            s.recv(100)
            s.close()
        for t in threads:
            t.join(TIMEOUT * 3)
        s, _, _, rest = endless[2]
        got = rest
        while len(got) < 20000:
            chunk = s.recv(65536)
            assert chunk
            got += chunk
        assert app.state.slots.active == 1      # the two gone gave their slots back; the third goes on
        s.close()
        wait_until(lambda: app.state.slots.active == 0, "the last slot to come back")
        wait_until(lambda: app.state.schedulers.current.running == 0, "the batch to empty")
    for k in range(2):
        body, complete = results[k]
        assert complete and body.decode() == "To" + alone(model, "To", 4000, 10 + k)


def test_a_reload_builds_a_new_kernel_and_running_generations_finish_on_the_old(tmp_path, shakespeare):
    path = tmp_path / "live.npz"
    first = train_small(path, shakespeare[:5000])
    app = create_app(path, registry=ModelRegistry(path, log=lambda line: None))
    with running(app) as base:
        s, status, _, rest = open_stream(base, "/generate?seed=To&length=30000&random_seed=3")
        assert status == 200
        old = app.state.schedulers.current
        rest += s.recv(1000)
        second = train_small(path, shakespeare, hidden_size=20, seed=5)
        status, raw = post(base, {"prompt": "To", "max_tokens": 100, "seed": 1})
        assert json.loads(raw)["choices"][0]["text"] == alone(second, "To", 100, 1)
        assert app.state.schedulers.current is not old and app.state.schedulers.built == 2
        body, complete = dechunk(rest + read_to_end(s))
        s.close()
        assert complete and body.decode() == "To" + alone(first, "To", 30000, 3)
        wait_until(lambda: old.running == 0, "the old model's batch to empty")


def test_the_official_openai_client_reads_n_choices(model_path):
    openai = require("openai", "pip install openai (in the test extra)")
    model = load(model_path)
    with running(create_app(model_path)) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", timeout=TIMEOUT, max_retries=0)
        r = client.completions.create(model="bard", prompt="To be", max_tokens=120, seed=7, n=3, best_of=3)
        assert [c.index for c in r.choices] == [0, 1, 2]
        assert [c.text for c in r.choices] == [alone(model, "To be", 120, 7 + i) for i in range(3)]
        got = ["", "", ""]
        for chunk in client.completions.create(model="bard", prompt="To be", max_tokens=120, seed=7, n=3,
                                               stream=True):
            for c in chunk.choices:
                got[c.index] += c.text
        assert got == [c.text for c in r.choices]
        for bad in (dict(n=0), dict(n=99), dict(n=2, best_of=3)):
            with pytest.raises(openai.BadRequestError) as e:
                client.completions.create(model="bard", prompt="x", max_tokens=3, **bad)
            assert e.value.status_code == 400 and e.value.body["param"] in ("n", "best_of")
