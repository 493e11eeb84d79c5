"""The server against hostile requests: Host checks, the API key (the official client included),
JSON-only bodies, parameter ranges, no paths or exception text sent, nosniff, and fuzzed bodies and
query strings that each get a 200 or a 4xx in OpenAI's error shape."""
import json
import logging
import os

import pytest

pytest.importorskip("starlette", reason="the server extra is not installed: pip install '.[serve]'")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from charstream.server.app import create_app  # noqa: E402
from charstream.server.guard import host_name  # noqa: E402
from serving import TIMEOUT, running, train_small  # noqa: E402

EXAMPLES = int(os.environ.get("CHARSTREAM_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
KEY = "sk-test-0123456789"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, shakespeare):
    path = tmp_path_factory.mktemp("hostile") / "bard.npz"
    train_small(path, shakespeare[:5000], hidden_size=16)
    return path


@pytest.fixture(scope="module")
def client(model_path):
    with TestClient(create_app(model_path), base_url="http://127.0.0.1") as c:
        yield c


def assert_error(r, status, code):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code, err
    assert "\n" not in err["message"]
    assert r.headers["x-content-type-options"] == "nosniff"
    return err


def test_host_names_are_parsed_without_ports():
    assert host_name("127.0.0.1:8000") == "127.0.0.1" and host_name("[::1]:80") == "::1"
    assert host_name("LocalHost") == "localhost" and host_name("::1") == "::1"


@pytest.mark.parametrize("host", ["evil.example", "attacker.com:8000", "127.0.0.1.nip.io", ""])
def test_other_hosts_get_421(client, host):
    for r in (client.get("/info", headers={"host": host}),
              client.post("/v1/completions", json={"prompt": "a"}, headers={"host": host})):
        assert "does not answer to the host" in assert_error(r, 421, "invalid_host")["message"]


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "[::1]:8000"])
def test_loopback_hosts_are_answered(client, host):
    assert client.get("/health", headers={"host": host}).status_code == 200


def test_allow_host_adds_a_name(model_path):
    with TestClient(create_app(model_path, allowed_hosts=["box.lan"]), base_url="http://box.lan:8000") as c:
        assert c.get("/health").status_code == 200
        assert_error(c.get("/health", headers={"host": "localhost"}), 421, "invalid_host")


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None])
def test_post_bodies_must_be_json(client, ctype):
    headers = {"content-type": ctype} if ctype else {}
    r = client.post("/v1/completions", content=b'{"prompt": "a", "max_tokens": 1}', headers=headers)
    assert_error(r, 415, "unsupported_media_type")
    r = client.post("/v1/completions", content=b'{"prompt": "a", "max_tokens": 1}',
                    headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200


@pytest.mark.parametrize("body, param", [
    ({"top_k": 2**70}, "top_k"), ({"top_k": 0}, "top_k"), ({"seed": 2**64}, "seed"), ({"seed": -1}, "seed"),
    ({"stop": ["x" * 257]}, "stop"), ({"temperature": 5e-324}, "temperature"), ({"max_tokens": 10**30}, "max_tokens"),
])
def test_out_of_range_is_400(client, body, param):
    err = assert_error(client.post("/v1/completions", json={"prompt": "a", **body}), 400, "invalid_value")
    assert err["param"] == param


@pytest.mark.parametrize("query, param", [
    ("top_k=1180591620717411303424", "top_k"), ("random_seed=18446744073709551616", "random_seed"),
    ("temperature=5e-324", "temperature"), ("length=" + "9" * 5000, "length"),
])
def test_out_of_range_query_is_400(client, query, param):
    r = client.get("/generate?" + query)
    assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_the_largest_seed_and_top_k_work(client):
    r = client.post("/v1/completions", json={"prompt": "a", "max_tokens": 5, "seed": 2**64 - 1, "top_k": 0x110000})
    assert r.status_code == 200 and len(r.json()["choices"][0]["text"]) == 5


def test_info_names_the_model_never_its_path(client, model_path):
    facts = client.get("/info").json()
    assert facts["id"] == "bard" and facts["file"] == "bard.npz"
    assert str(model_path.parent) not in json.dumps(facts)


def test_a_500_says_internal_error_and_logs_the_rest(model_path, caplog, monkeypatch):
    app = create_app(model_path)
    registry = app.state.registry

    def broken():
        raise RuntimeError(f"secret detail at {model_path}")
    monkeypatch.setattr(registry, "facts", broken)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c, \
            caplog.at_level(logging.ERROR, logger="charstream.server"):
        r = c.get("/info")
    assert r.status_code == 500 and r.json()["error"]["message"] == "internal error"
    assert "secret" not in r.text and str(model_path) not in r.text
    assert "secret detail" in caplog.text
    assert r.headers["x-content-type-options"] == "nosniff"


def test_every_response_is_nosniff(client):
    for r in (client.get("/"), client.get("/health"), client.get("/generate?length=3"), client.get("/nope"),
              client.post("/v1/completions", json={"prompt": "a", "max_tokens": 2})):
        assert r.headers["x-content-type-options"] == "nosniff"


def test_an_api_key_is_required_everywhere_but_health(model_path):
    with TestClient(create_app(model_path, api_key=KEY), base_url="http://127.0.0.1") as c:
        assert c.get("/health").status_code == 200
        for path in ("/", "/info", "/v1/models", "/v1/models/bard", "/generate?length=2"):
            assert_error(c.get(path), 401, "invalid_api_key")
            assert_error(c.get(path, headers={"authorization": "Bearer wrong"}), 401, "invalid_api_key")
            assert c.get(path, headers={"authorization": f"Bearer {KEY}"}).status_code == 200
        assert_error(c.post("/v1/completions", json={"prompt": "a"}), 401, "invalid_api_key")
        r = c.post("/v1/completions", json={"prompt": "a", "max_tokens": 2}, headers={"authorization": f"Bearer {KEY}"})
        assert r.status_code == 200
        # the page: a browser answers the Basic challenge with KEY as its password, then sends it on
        r = c.get("/")
        assert r.headers["www-authenticate"].startswith("Basic")
        assert c.get("/", auth=("", KEY)).status_code == 200 and c.get("/info", auth=("me", KEY)).status_code == 200
        assert_error(c.get("/info", auth=("", "wrong")), 401, "invalid_api_key")


def test_the_official_openai_client_with_a_key(model_path):
    openai = pytest.importorskip("openai", reason="pip install openai (in the test extra)")
    with running(create_app(model_path, api_key=KEY)) as base:
        good = openai.OpenAI(base_url=base + "/v1", api_key=KEY, timeout=TIMEOUT, max_retries=0)
        assert good.models.list().data[0].id == "bard"
        assert len(good.completions.create(model="bard", prompt="a", max_tokens=7).choices[0].text) == 7
        bad = openai.OpenAI(base_url=base + "/v1", api_key="wrong", timeout=TIMEOUT, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            bad.completions.create(model="bard", prompt="a", max_tokens=7)
        assert e.value.status_code == 401 and e.value.code == "invalid_api_key"


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=12)
FIELDS = ["model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream",
          "stream_options", "user", "n", "echo", "logprobs", "suffix", "best_of", "logit_bias"]
small = st.one_of(st.integers(-3, 40), st.integers(), st.floats(), st.sampled_from(["bard", "a", "", "\x00"]),
                  json_values)
bodies = st.one_of(st.dictionaries(st.sampled_from(FIELDS), small, max_size=6), json_values)


def _ok_or_error(r):
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text)
    if r.status_code != 200:
        err = r.json()["error"]
        assert isinstance(err["message"], str) and "\n" not in err["message"] and "Traceback" not in err["message"]


@FUZZ
@given(body=bodies)
def test_fuzzed_completion_bodies_get_200_or_4xx(client, body):
    if isinstance(body, dict) and isinstance(body.get("max_tokens"), int):
        body["max_tokens"] = body["max_tokens"] % 50   # bounded work per example
    elif isinstance(body, dict):
        body.setdefault("max_tokens", 5)
    _ok_or_error(client.post("/v1/completions", content=json.dumps(body).encode(),
                             headers={"content-type": "application/json"}))


@FUZZ
@given(raw=st.binary(max_size=200))
def test_fuzzed_raw_bodies_get_4xx(client, raw):
    _ok_or_error(client.post("/v1/completions", content=raw, headers={"content-type": "application/json"}))


@FUZZ
@given(query=st.lists(st.tuples(st.sampled_from(["seed", "length", "temperature", "top_k", "top_p", "sampler",
                                                 "random_seed", "x"]),
                                st.one_of(st.text(max_size=12), st.integers().map(str), st.floats().map(str))),
                      max_size=5))
def test_fuzzed_generate_queries_get_200_or_4xx(client, query):
    params = [(k, v) for k, v in query if k != "length"] + [("length", "20")]
    _ok_or_error(client.get("/generate", params=params))


def _serve(*args, env=None):
    """`charstream serve` as a process on 127.0.0.1 and a free port: (process, port)."""
    import re
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "charstream", "serve", "--port", "0", *map(str, args)],
                            cwd=os.path.dirname(os.path.abspath(__file__)), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    line = proc.stderr.readline().decode()
    m = re.fullmatch(r"serving on http://127\.0\.0\.1:(\d+)\n", line)
    if not m:
        proc.kill()
        proc.wait(TIMEOUT)
        raise AssertionError(f"unexpected first line {line!r}")
    return proc, int(m.group(1))


def _get(port, path, host="127.0.0.1", auth=None):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        c.request("GET", path, headers={"Host": host, **({"Authorization": auth} if auth else {})})
        return c.getresponse().status
    finally:
        c.close()


@pytest.mark.parametrize("how", ["option", "environment"])
def test_serve_takes_the_key_and_extra_hosts(model_path, how):
    args = ["--model", model_path, "--allow-host", "box.lan"] + (["--api-key", KEY] if how == "option" else [])
    proc, port = _serve(*args, env={"CHARSTREAM_API_KEY": KEY} if how == "environment" else None)
    try:
        assert _get(port, "/health") == 200
        assert _get(port, "/info") == 401
        assert _get(port, "/info", auth=f"Bearer {KEY}") == 200
        assert _get(port, "/info", host="box.lan:8000", auth=f"Bearer {KEY}") == 200
        assert _get(port, "/info", host="evil.example", auth=f"Bearer {KEY}") == 421
    finally:
        proc.terminate()
        assert proc.wait(TIMEOUT + 10) == 0
        err = proc.stderr.read().decode()
        proc.stderr.close()
    assert "Traceback" not in err and "Warning" not in err, err


def test_the_page_works_with_a_key_through_the_browsers_password(model_path):
    from test_server_page import ARGS, CHROMIUM, _browser_or_skip
    sync_playwright = _browser_or_skip()
    with running(create_app(model_path, api_key=KEY)) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=TIMEOUT * 3000)
        try:
            page = browser.new_context(http_credentials={"username": "me", "password": KEY}).new_page()
            page.set_default_timeout(TIMEOUT * 1000)
            page.goto(base + "/")
            page.wait_for_function("document.getElementById('facts').dataset.hiddenSize === '16'")
            page.fill("#length", "100")
            page.click("#generate")
            page.wait_for_function("document.getElementById('status').dataset.state === 'done'")
            assert len(page.inner_text("#output")) >= 100
            assert browser.new_page().request.get(base + "/info").status == 401   # without the password
        finally:
            browser.close()


def test_error_messages_stay_one_line_whatever_the_client_sent(client):
    """Found by the fuzzer: an unknown field named "\\n" came back in a two-line message."""
    err = assert_error(client.post("/v1/completions", json={"\n\r\x00" + "x" * 1000: 1}), 400, "unknown_parameter")
    assert err["message"].startswith("unrecognized request argument supplied: \\n\\r\\x00x") and len(err["message"]) < 310
