"""The server's HTTP API in process (starlette's TestClient): OpenAI's shapes, the same text as
`charstream generate`, stop sequences, and a 4xx with OpenAI's error body for every bad request."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from serving import require  # noqa: E402

require("starlette")
require("uvicorn")
from starlette.testclient import TestClient  # noqa: E402

from charstream.cli import main  # noqa: E402
from charstream.server.app import MAX_BODY, create_app  # noqa: E402
from charstream.server.openai_schema import MAX_TOKENS  # noqa: E402
from serving import train_small  # noqa: E402


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, shakespeare):
    path = tmp_path_factory.mktemp("serve") / "bard.npz"
    train_small(path, shakespeare)
    return path


@pytest.fixture
def client(model_path):
    with TestClient(create_app(model_path), base_url="http://127.0.0.1") as c:
        yield c


def cli_text(model_path, seed, length, *options):
    """What `charstream generate` writes after the seed, without the newline it may end --length with."""
    r = CliRunner().invoke(main, ["generate", "--model", str(model_path), "--seed", seed, "--length",
                                  str(length), *map(str, options)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = r.stdout_bytes.decode("utf-8")
    assert out.startswith(seed)
    out = out[len(seed):]
    if len(out) == length + 1 and out.endswith("\n"):
        out = out[:-1]
    assert len(out) == length
    return out


def complete(client, **body):
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def stream(client, **body):
    """The chunks of a streamed completion, checked to be server-sent events ending with [DONE]."""
    r = client.post("/v1/completions", json={**body, "stream": True})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = r.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""], events[-3:]
    assert all(e.startswith("data: ") for e in events[:-2])
    return [json.loads(e[len("data: "):]) for e in events[:-2]]


def test_models_lists_the_one_model(client):
    r = client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    [m] = body["data"]
    assert set(m) == {"id", "object", "created", "owned_by", "meta"}   # meta: the facts, as llama.cpp's server has
    assert m["id"] == "bard" and m["object"] == "model" and isinstance(m["created"], int)
    assert client.get("/v1/models/bard").json() == m
    r = client.get("/v1/models/other")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_completion_shape_and_usage(client):
    body = complete(client, model="bard", prompt="To be", max_tokens=40, seed=3)
    assert set(body) == {"id", "object", "created", "model", "choices", "usage"}
    assert body["object"] == "text_completion" and body["model"] == "bard" and body["id"].startswith("cmpl-")
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None and choice["finish_reason"] == "length"
    assert len(choice["text"]) == 40
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 40, "total_tokens": 45}


def test_default_max_tokens_is_openais_16(client):
    assert len(complete(client, prompt="To be", seed=1)["choices"][0]["text"]) == 16


@pytest.mark.parametrize("extra, options", [
    ({}, ()),
    ({"temperature": 0.7}, ("--temperature", 0.7)),
    ({"temperature": 1.3, "top_k": 5}, ("--temperature", 1.3, "--top-k", 5)),
    ({"top_p": 0.8}, ("--top-p", 0.8)),
    ({"temperature": 0}, ("--sampler", "greedy")),
])
def test_same_text_as_generate_streamed_or_not(client, model_path, extra, options):
    seed, n, rs = "ROMEO:\nWhat", 700, 11
    expected = cli_text(model_path, seed, n, "--random-seed", rs, *options)
    body = complete(client, prompt=seed, max_tokens=n, seed=rs, **extra)
    assert body["choices"][0]["text"] == expected
    chunks = stream(client, prompt=seed, max_tokens=n, seed=rs, **extra)
    assert len(chunks) >= 2 and len(chunks[0]["choices"][0]["text"]) == 1   # the first character at once
    assert "".join(c["choices"][0]["text"] for c in chunks) == expected
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["length"]
    for c in chunks:
        assert set(c) == {"id", "object", "created", "model", "choices"}
        assert c["object"] == "text_completion" and c["id"] == chunks[0]["id"]
        assert c["choices"][0]["index"] == 0 and c["choices"][0]["logprobs"] is None


def test_generate_endpoint_writes_what_the_command_writes(client, model_path):
    expected = cli_text(model_path, "To be", 500, "--random-seed", 2, "--temperature", 0.9)
    r = client.get("/generate", params={"seed": "To be", "length": 500, "random_seed": 2, "temperature": 0.9})
    assert r.status_code == 200 and r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.text == "To be" + expected


def test_prompt_as_a_list_of_one_string(client):
    a = complete(client, prompt=["To be"], max_tokens=30, seed=5)["choices"][0]["text"]
    assert a == complete(client, prompt="To be", max_tokens=30, seed=5)["choices"][0]["text"]


def test_stop_cuts_before_the_first_occurrence(client):
    full = complete(client, prompt="To be", max_tokens=2000, seed=7)["choices"][0]["text"]
    # sequences that straddle the first, growing blocks (1, 2, 4, ... characters) and later ones
    for start, width in [(0, 2), (2, 3), (5, 3), (30, 4), (400, 6)]:
        stop = full[start:start + width]
        expected = full[:full.find(stop)]
        body = complete(client, prompt="To be", max_tokens=2000, seed=7, stop=[stop, "\x00never"])
        assert body["choices"][0]["text"] == expected
        assert body["choices"][0]["finish_reason"] == "stop"
        assert body["usage"]["completion_tokens"] == len(expected)
        chunks = stream(client, prompt="To be", max_tokens=2000, seed=7, stop=stop)
        assert "".join(c["choices"][0]["text"] for c in chunks) == expected
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stop_past_max_tokens_does_not_apply(client):
    full = complete(client, prompt="To be", max_tokens=300, seed=7)["choices"][0]["text"]
    stop = full[200:204]
    if stop in full[:200]:
        pytest.fail("pick another window: the stop occurs earlier")   # fixed seed: does not happen
    body = complete(client, prompt="To be", max_tokens=202, seed=7, stop=stop)
    assert body["choices"][0] == {"text": full[:202], "index": 0, "logprobs": None, "finish_reason": "length"}


def test_zero_max_tokens(client):
    body = complete(client, prompt="To be", max_tokens=0)
    assert body["choices"][0]["text"] == "" and body["choices"][0]["finish_reason"] == "length"
    chunks = stream(client, prompt="To be", max_tokens=0)
    assert [c["choices"][0] for c in chunks] == [{"text": "", "index": 0, "logprobs": None,
                                                  "finish_reason": "length"}]


def test_stream_usage_chunk_on_request(client):
    chunks = stream(client, prompt="To be", max_tokens=20, seed=1, stream_options={"include_usage": True})
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25}


def test_neutral_openai_fields_are_accepted(client):
    a = complete(client, prompt="To be", max_tokens=30, seed=4)["choices"][0]["text"]
    b = complete(client, prompt="To be", max_tokens=30, seed=4, n=1, best_of=1, echo=False, logprobs=None,
                 presence_penalty=0.0, frequency_penalty=0, logit_bias={}, user="me", top_p=1,
                 stream=False, suffix=None)["choices"][0]["text"]
    assert a == b


def assert_error(r, status, param, code, says):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    err = body["error"]
    assert err["param"] == param and err["code"] == code, err
    assert says in err["message"] and "\n" not in err["message"], err
    assert err["type"] == ("server_error" if status >= 500 else "invalid_request_error")


@pytest.mark.parametrize("body, param, code, says", [
    ({"prompt": 5}, "prompt", "invalid_type", "prompt must be a string"),
    ({"prompt": ["a", "b"]}, "prompt", "invalid_type", "prompt must be a string"),
    ({"prompt": [1, 2, 3]}, "prompt", "invalid_type", "prompt must be a string"),
    ({"max_tokens": "10"}, "max_tokens", "invalid_type", "max_tokens must be an integer, got '10'"),
    ({"max_tokens": 1.5}, "max_tokens", "invalid_type", "max_tokens must be an integer"),
    ({"max_tokens": True}, "max_tokens", "invalid_type", "max_tokens must be an integer"),
    ({"max_tokens": -1}, "max_tokens", "invalid_value", "max_tokens must be between 0 and 1,000,000, got -1"),
    ({"max_tokens": MAX_TOKENS + 1}, "max_tokens", "invalid_value", "got 1000001"),
    ({"temperature": "hot"}, "temperature", "invalid_type", "temperature must be a finite number"),
    ({"temperature": -0.5}, "temperature", "invalid_value", "temperature must be at least 0"),
    ({"temperature": 1e-320}, "temperature", "invalid_value", "too small"),
    ({"top_p": 0}, "top_p", "invalid_value", "top_p must be in (0, 1]"),
    ({"top_p": 1.5}, "top_p", "invalid_value", "top_p must be in (0, 1]"),
    ({"top_k": 0}, "top_k", "invalid_value", "top_k must be between 1 and 1,114,112"),
    ({"seed": -1}, "seed", "invalid_value", "seed must be between 0 and 18,446,744,073,709,551,615"),
    ({"seed": "1"}, "seed", "invalid_type", "seed must be an integer"),
    ({"stream": "yes"}, "stream", "invalid_type", "stream must be true or false"),
    ({"stop": 5}, "stop", "invalid_type", "stop must be a string or a list of strings"),
    ({"stop": ["a", ""]}, "stop", "invalid_value", "cannot be empty"),
    ({"stop": list("abcde")}, "stop", "invalid_value", "at most 4"),
    ({"model": "gpt-4"}, "model", "model_not_found", "the model 'gpt-4' does not exist"),
    ({"model": 3}, "model", "invalid_type", "model must be a string"),
    ({"n": 0}, "n", "invalid_value", "n must be between 1 and 16, got 0"),
    ({"n": 17}, "n", "invalid_value", "n must be between 1 and 16, got 17"),
    ({"n": 2.0}, "n", "invalid_type", "n must be an integer, got 2.0"),
    ({"n": "2"}, "n", "invalid_type", "n must be an integer, got '2'"),
    ({"n": True}, "n", "invalid_type", "n must be an integer, got True"),
    ({"n": 2, "best_of": 3}, "best_of", "invalid_value", "best_of must equal n (2), got 3"),
    ({"best_of": 2}, "best_of", "invalid_value", "best_of must equal n (1), got 2"),
    ({"n": 2, "best_of": "2"}, "best_of", "invalid_type", "best_of must be an integer"),
    ({"echo": True}, "echo", "unsupported_value", "echo=True is not supported"),
    ({"max_tokns": 3}, "max_tokns", "unknown_parameter", "unrecognized request argument supplied: max_tokns"),
    ({"stream_options": {"x": 1}}, "stream_options", "invalid_type", "stream_options"),
])
def test_bad_completion_requests_get_400(client, body, param, code, says):
    assert_error(client.post("/v1/completions", json={"prompt": "To be", **body}), 400, param, code, says)


@pytest.mark.parametrize("content, code, says", [
    (b"{bad", "invalid_json", "the request body is not valid JSON: Expecting property name"),
    (b"", "invalid_json", "the request body is not valid JSON"),
    (b"\xff\xfe{}", "invalid_json", "the request body is not valid JSON"),
    (b"[1, 2]", "invalid_type", "the request body must be a JSON object"),
    (b'"text"', "invalid_type", "the request body must be a JSON object"),
    (b"null", "invalid_type", "the request body must be a JSON object"),
])
def test_bad_json_gets_400(client, content, code, says):
    r = client.post("/v1/completions", content=content, headers={"content-type": "application/json"})
    assert_error(r, 400, None, code, says)


def test_body_size_is_limited(client):
    big = json.dumps({"prompt": "a" * MAX_BODY}).encode()
    json_type = {"content-type": "application/json"}
    assert_error(client.post("/v1/completions", content=big, headers=json_type), 413, None, "request_too_large",
                 f"larger than {MAX_BODY:,} bytes")

    def chunks():   # no Content-Length: the limit holds as the body arrives
        yield b'{"prompt": "'
        for _ in range(MAX_BODY // 1024 + 1):
            yield b"a" * 1024
        yield b'"}'
    assert_error(client.post("/v1/completions", content=chunks(), headers=json_type), 413, None, "request_too_large", "larger than")
    # just under the limit is fine
    ok = json.dumps({"prompt": "To be", "max_tokens": 1, "user": "u" * (MAX_BODY - 100)}).encode()
    assert len(ok) <= MAX_BODY
    assert client.post("/v1/completions", content=ok, headers=json_type).status_code == 200


@pytest.mark.parametrize("params, param, code, says", [
    ({"length": "-1"}, "length", "invalid_value", "length must be between 0 and 1,000,000, got -1"),
    ({"length": "ten"}, "length", "invalid_type", "length must be an integer, got 'ten'"),
    ({"temperature": "0"}, "temperature", "invalid_value", "temperature must be above 0"),
    ({"temperature": "nan"}, "temperature", "invalid_type", "finite number"),
    ({"top_p": "2"}, "top_p", "invalid_value", "top_p must be in (0, 1]"),
    ({"random_seed": "-3"}, "random_seed", "invalid_value", "random_seed must be between 0 and"),
    ({"lenght": "3"}, "lenght", "unknown_parameter", "unknown parameter 'lenght'"),
    ({"sampler": "nope"}, None, "invalid_value", "no sampler named 'nope'"),
])
def test_bad_generate_requests_get_400(client, params, param, code, says):
    assert_error(client.get("/generate", params=params), 400, param, code, says)


def test_repeated_generate_parameter_gets_400(client):
    assert_error(client.get("/generate?length=3&length=4"), 400, "length", "invalid_value", "given 2 times")


def test_unknown_paths_get_404_and_wrong_methods_405(client):
    assert_error(client.get("/v2/nothing"), 404, None, "not_found", "no such endpoint: GET /v2/nothing")
    assert_error(client.get("/v1/completions"), 405, None, "method_not_allowed", "GET /v1/completions")
    assert_error(client.post("/v1/models"), 405, None, "method_not_allowed", "POST /v1/models")


CELLS = [("rnn", 1), ("gru", 1), ("lstm", 1), ("lstm", 2)]


@pytest.mark.parametrize("cell,layers", CELLS)
def test_info_and_health(tmp_path, shakespeare, cell, layers):
    """/info, /v1/models and /v1/models/ID say what `charstream info --json` says, for every cell:
    each fact checked against the model itself and the cell's parameter table."""
    import charstream
    from charstream import cells
    path = tmp_path / f"{cell}{layers}.npz"
    charstream.train([[shakespeare[:3000]]], model=path, cell=cell, layers=layers, hidden_size=12, random_seed=1,
                     dtype="float64", seq_length=25)   # the facts of a format-2 file; the lstm's default is float32
    m = charstream.load(path)
    V = m.vocab_size
    expected = {"cell": cell, "layers": layers, "dtype": "float64", "hidden_size": 12, "vocab_size": V,
                "parameters": sum(int(np.prod(p.shape)) for p in cells.params(cell, layers, V, 12)),
                "chars_trained": m.state.chars_trained, "format_version": 2,
                "recent_nats_per_char": pytest.approx(m.state.smooth_loss / m.state.seq_length),
                "history": m.history.points}
    assert m.state.chars_trained == 2975 and len(m.history.points) == 2
    r = CliRunner().invoke(main, ["info", "--model", str(path), "--json"])
    assert r.exit_code == 0, r.output
    cli_facts = json.loads(r.stdout)
    with TestClient(create_app(path), base_url="http://127.0.0.1") as client:
        info = client.get("/info").json()
        listed = client.get("/v1/models").json()["data"][0]["meta"]
        one = client.get(f"/v1/models/{cell}{layers}").json()["meta"]
        assert client.get("/health").json() == {"status": "ok"}
    assert info["id"] == f"{cell}{layers}"
    for surface in (cli_facts, info, listed, one):
        assert {k: surface[k] for k in expected} == expected
    assert info["file"] == path.name and "path" not in info   # its name, never where it is
    assert listed == one == {k: v for k, v in info.items() if k not in ("id", "file", "created", "reloads")}
    text = CliRunner().invoke(main, ["info", "--model", str(path)]).stdout
    assert f"cell           {cell}, {layers} layer{'s' if layers > 1 else ''}, float64" in text
    assert f"parameters     {expected['parameters']:,}" in text


def test_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "<script src" not in page and "<link" not in page and "http://" not in page and "https://" not in page
    assert len(page) < 20_000


def test_generate_takes_prompt_and_its_old_spelling_seed(client, model_path):
    want = "To be" + cli_text(model_path, "To be", 60, "--random-seed", 2)
    for q in ("prompt=To+be", "seed=To+be"):
        r = client.get(f"/generate?{q}&length=60&random_seed=2")
        assert r.status_code == 200 and r.text == want, q
    assert_error(client.get("/generate?prompt=a&seed=b"), 400, "seed", "invalid_value",
                 "give prompt or its old spelling seed, not both")
