"""What the server tests share: the server extra (required in CI), a small trained model, a server
in a thread on 127.0.0.1, raw HTTP."""
import contextlib
import importlib
import json
import os
import socket
import threading
import time

import pytest

from charstream.model import Model
from charstream.trainer import Trainer

TIMEOUT = 10   # seconds any socket operation or wait in these tests may take
REQUIRE = "CHARSTREAM_REQUIRE_SERVER"   # =1 (CI sets it): a missing server extra fails the tests, never skips them


def require(module, install="pip install '.[serve]'"):
    """Import `module` for a test file, or skip the file saying what to install; with
    CHARSTREAM_REQUIRE_SERVER=1, fail instead."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{REQUIRE}=1 but {module} cannot be imported ({e}): {install}", pytrace=False)
        pytest.skip(f"{module} is not installed: {install}", allow_module_level=True)


def train_small(path, text, hidden_size=32, seed=0, repeat=1):
    """A model trained on `text` (`repeat` passes), saved to path; returned too."""
    model = Model(sorted(set(text)), hidden_size=hidden_size, seed=seed)
    for _ in Trainer(model).train([text] * repeat):
        pass
    model.save(path)
    return model


@contextlib.contextmanager
def running(app):
    """Serve `app` with uvicorn in a thread on 127.0.0.1 (a free port); yield its base URL; stop it."""
    from charstream.server.run import Server, bind, url
    sock = bind("127.0.0.1", 0)
    server = Server(app, sock)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "the server to start")
        assert server.started, "the server did not start"
        yield url(sock)
    finally:
        server.stop()
        thread.join(TIMEOUT + 5)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


def wait_until(condition, what, timeout=TIMEOUT):
    """Poll condition() every 10 ms until it is true; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def open_stream(base, target, body=None):
    """A raw socket with a request sent (GET, or POST of the JSON body; the server closes the
    connection after the response) and the response's head read: (socket, status, head, first body bytes)."""
    host, port = base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    if body is None:
        req = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    else:
        data = json.dumps(body).encode()
        req = (f"POST {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(data)}\r\n\r\n").encode() + data
    s.sendall(req)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(65536)
        assert chunk, f"the connection closed before the response head: {got!r}"
        got += chunk
    head, rest = got.split(b"\r\n\r\n", 1)
    status = int(head.split()[1])
    return s, status, head.decode("latin-1"), rest


def read_to_end(s, limit=1 << 24):
    """The rest of what the socket sends until it closes (at most `limit` bytes)."""
    out = b""
    while len(out) < limit:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    return out


def dechunk(raw):
    """The body of an HTTP/1.1 chunked transfer, and whether its last (empty) chunk came."""
    out, pos = b"", 0
    while True:
        end = raw.find(b"\r\n", pos)
        if end < 0:
            return out, False
        n = int(raw[pos:end].split(b";")[0], 16)
        if n == 0:
            return out, True
        out += raw[end + 2:end + 2 + n]
        pos = end + 2 + n + 2
