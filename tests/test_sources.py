"""Sources: TCP (connect and listen) on 127.0.0.1 with bounded servers, decoding across reads, pipes."""
import io
import itertools
import signal
import socket
import struct
import subprocess
import threading
import time
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import charstream
from charstream.cli import main
from charstream.errors import CharstreamError
from charstream.sources import Listener, chain_sources, open_source, read_stream, with_idle
from helpers import TIMEOUT, invoke, assert_same_model, cli, popen, saved_state, stop, wait_until


class Server:
    """A one-connection server on 127.0.0.1 (OS-chosen port) that sends `parts` (bytes; a float is a
    pause in seconds, a threading.Event waits until the test sets it) and then closes, or resets the
    connection with `reset=True`."""

    def __init__(self, parts, reset=False):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(TIMEOUT)
        self.url = "tcp://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.error = None
        self.gave_up = False   # an Event the test never set
        self.thread = threading.Thread(target=self._run, args=(parts, reset), daemon=True)
        self.thread.start()

    def _run(self, parts, reset):
        try:
            with self.sock:
                conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for part in parts:
                    if isinstance(part, float):
                        time.sleep(part)
                    elif isinstance(part, threading.Event):
                        self.gave_up |= not part.wait(TIMEOUT)
                    else:
                        conn.sendall(part)
                if reset:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError as e:
            self.error = e

    def join(self):
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive() and not self.gave_up


def _collect(texts):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = list(texts)
    return out, [str(x.message) for x in w]


def test_a_character_split_across_two_packets_arrives_whole():
    ja = "春".encode()
    rest_may_come = threading.Event()
    server = Server([b"ab" + ja[:2], rest_may_come, ja[2:] + "cd Ещё".encode()])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        texts = iter(open_source(server.url))
        first = next(texts)
        while len(first) < 2:   # (should the first packet's four bytes come in two reads)
            first += next(texts)
        rest_may_come.set()     # only now does the server send the character's last byte
        rest = list(texts)
    server.join()
    assert first == "ab"        # the half character was held back, neither dropped nor replaced
    assert first + "".join(rest) == "ab春cd Ещё" and [str(x.message) for x in w] == []


def test_the_decoder_joins_characters_split_across_any_reads():
    text = "Мороз и солнце 春はあけぼの 🎉 ok"
    data = text.encode()

    class Trickle(io.RawIOBase):   # returns one byte per read
        def __init__(self):
            self.pos = 0

        def readable(self):
            return True

        def read(self, n=-1):
            self.pos += 1
            return data[self.pos - 1:self.pos]

    texts, warned = _collect(read_stream(Trickle(), "trickle"))
    assert "".join(texts) == text and warned == []


def test_a_peer_closing_mid_character_ends_with_one_u_fffd_and_one_warning():
    server = Server([b"abc", 0.05, "春".encode()[:2]])
    texts, warned = _collect(open_source(server.url))
    server.join()
    assert "".join(texts) == "abc\ufffd"
    assert len(warned) == 1 and "invalid UTF-8 at byte 3" in warned[0] and server.url in warned[0]


def test_tcp_trains_exactly_like_the_same_text(shakespeare):
    text = shakespeare[:3000] + "Ещё 春"
    data = text.encode()
    server = Server([data[:1001], 0.05, data[1001:2002], 0.05, data[2002:]])
    m = charstream.Model("", hidden_size=8, seed=3)
    list(charstream.Trainer(m).train(open_source(server.url)))
    server.join()
    ref = charstream.Model("", hidden_size=8, seed=3)
    list(charstream.Trainer(ref).train([text]))
    assert_same_model(m, ref)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_is_one_clear_error():
    url = "tcp://127.0.0.1:%d" % _free_port()
    with pytest.raises(CharstreamError, match="connection refused"):
        open_source(url)
    r = CliRunner().invoke(main, ["train", url, "--model", "x.npz"])
    assert r.exit_code == 1
    assert r.stderr.startswith(f"Error: {url}: connection refused") and r.stderr.count("\n") == 1


def test_a_dropped_connection_is_one_clear_error(tmp_path):
    server = Server([b"some text " * 50, 0.3], reset=True)
    r = CliRunner().invoke(main, ["train", server.url, "--model", str(tmp_path / "d.npz"), "--hidden-size", "4",
                                  "--report-every", "100", "--sample-every", "0"])
    server.join()
    assert r.exit_code == 1
    assert f"Error: {server.url}: connection dropped" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("source, msg", [
    ("tcp://127.0.0.1", "expected HOST:PORT"),
    ("tcp://127.0.0.1:0", "expected HOST:PORT"),
    ("tcp://:80", "expected HOST:PORT"),
    ("nosuch://x", "no source plugin serves the scheme 'nosuch'"),
])
def test_bad_source_strings_are_refused_before_training(tmp_path, source, msg):
    r = CliRunner().invoke(main, ["train", source, "--model", str(tmp_path / "b.npz")])
    assert r.exit_code == 1 and msg in r.stderr and not (tmp_path / "b.npz").exists()


def test_file_urls_and_paths_chain_as_one_stream(tmp_path, shakespeare):
    (tmp_path / "a.txt").write_text(shakespeare[:700], encoding="utf-8")
    (tmp_path / "b.txt").write_text(shakespeare[700:1500], encoding="utf-8")
    texts = list(chain_sources([f"file://{tmp_path}/a.txt", str(tmp_path / "b.txt"), iter(["tail"])]))
    assert "".join(texts) == shakespeare[:1500] + "tail"


def _client(port, parts):
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as c:
        for part in parts:
            if isinstance(part, float):
                time.sleep(part)
            else:
                c.sendall(part)


def test_a_listener_reads_connections_one_after_another():
    listener = Listener("127.0.0.1:0", max_connections=3)
    listener.sock.settimeout(TIMEOUT)   # a failed client must fail the test, not hang it
    port = int(listener.address.rsplit(":", 1)[1])
    ja = "はあ".encode()

    def clients():
        _client(port, [b"one ", ja[:4]])                  # closes mid-character
        _client(port, [ja[4:] + b" two two two "])        # a fresh decoder: the 2 stray bytes are invalid
        _client(port, ["Мороз".encode()[:3], 0.05, "Мороз".encode()[3:]])

    t = threading.Thread(target=clients, daemon=True)
    t.start()
    texts, warned = _collect(listener)
    t.join(TIMEOUT)
    assert not t.is_alive()
    assert "".join(texts) == "one は\ufffd" + "\ufffd\ufffd two two two Мороз"
    # (only this listener's warnings: catch_warnings also records other threads' warnings)
    assert len([w for w in warned if w.startswith("tcp connection from") and "invalid UTF-8" in w]) == 2


def test_train_listen_trains_each_connection_and_saves_on_interrupt(tmp_path, shakespeare):
    path = tmp_path / "l.npz"
    proc = popen(cli("train", "--listen", "127.0.0.1:0", "--model", str(path), "--hidden-size", "8",
                       "--checkpoint-every", "0.2", "--report-every", "100", "--sample-every", "0"),
                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        line = proc.stderr.readline().decode()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        _client(port, [shakespeare[:1500].encode()])
        _client(port, ["Ещё ты дремлешь ".encode() * 20])
        deadline = time.monotonic() + 30
        seen = 0
        while time.monotonic() < deadline:
            if path.exists():
                try:
                    seen = charstream.load(path).state.chars_seen
                except charstream.ModelFileError:
                    pass
            if seen == 1500 + 16 * 20:
                break
            time.sleep(0.1)
        assert seen == 1500 + 16 * 20, "the idle checkpoint did not save both connections"
        assert proc.poll() is None, "the server stopped by itself"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        err = proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.stderr.close()
    assert "Traceback" not in err and "saved model to" in err
    assert "ё" in charstream.load(path).vocab


def test_a_listener_warns_about_a_dropped_connection_and_goes_on():
    listener = Listener("127.0.0.1:0", max_connections=2)
    listener.sock.settimeout(TIMEOUT)   # a failed client must fail the test, not hang it
    port = int(listener.address.rsplit(":", 1)[1])
    read_lost = threading.Event()

    def clients():
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as c:
            c.sendall(b"lost ")
            read_lost.wait(TIMEOUT)   # the listener has yielded the text: now reset the connection
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        _client(port, [b"kept"])

    t = threading.Thread(target=clients, daemon=True)
    t.start()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        texts = iter(listener)
        first = next(texts)
        read_lost.set()
        rest = list(texts)
    t.join(TIMEOUT)
    assert not t.is_alive()
    assert first == "lost " and "".join(rest) == "kept"   # what came before the reset is kept
    warned = [str(x.message) for x in w]
    assert len(warned) == 1 and "connection dropped" in warned[0]


def test_a_listener_on_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        listener = Listener("[::1]:0", max_connections=1)
        listener.sock.settimeout(TIMEOUT)   # a failed client must fail the test, not hang it
    except CharstreamError:
        pytest.skip("no IPv6 loopback here")
    port = int(listener.address.rsplit(":", 1)[1])
    assert listener.address.startswith("[::1]:")
    t = threading.Thread(target=lambda: _client6(port, "Ещё".encode()), daemon=True)
    t.start()
    assert "".join(listener) == "Ещё"
    t.join(TIMEOUT)


def _client6(port, data):
    with socket.create_connection(("::1", port), timeout=TIMEOUT) as c:
        c.sendall(data)


def test_listen_on_a_bad_address_is_one_clear_error(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        addr = "127.0.0.1:%d" % busy.getsockname()[1]
        for bad, msg in [(addr, f"cannot listen on {addr}"), ("127.0.0.1", "expected HOST:PORT")]:
            r = CliRunner().invoke(main, ["train", "--listen", bad, "--model", str(tmp_path / "x.npz")])
            assert r.exit_code == 1 and r.stderr.startswith("Error: ") and msg in r.stderr


def test_generate_piped_into_train(tmp_path, shakespeare):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert CliRunner().invoke(main, ["train", "-", "--model", str(a), "--hidden-size", "8"],
                              input=shakespeare[:2000]).exit_code == 0
    gen = popen(cli("generate", "--model", str(a), "--length", "20000", "--random-seed", "1"),
                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    train = popen(cli("train", "-", "--model", str(b), "--hidden-size", "8", "--report-every", "100",
                        "--sample-every", "0"), stdin=gen.stdout, stderr=subprocess.PIPE)
    gen.stdout.close()
    err = train.communicate(timeout=60)[1]
    assert gen.wait(timeout=30) == 0 and train.returncode == 0, err
    assert charstream.load(b).state.chars_seen == 20000


def test_a_slow_producer_is_trained_as_one_stream(tmp_path, shakespeare):
    """A pipe that goes quiet mid-stream (long enough for an idle checkpoint) trains as one stream."""
    path = tmp_path / "s.npz"
    first, second = shakespeare[:1200], "Мороз и солнце " * 30
    proc = popen(cli("train", "-", "--model", path, "--hidden-size", "8", "--random-seed", "0",
                     "--checkpoint-every", "0.2", "--report-every", "100", "--sample-every", "0"),
                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(first.encode())
        proc.stdin.flush()
        # the first part has arrived, and the pipe stayed quiet long enough to checkpoint it
        wait_until(lambda: getattr(saved_state(path), "chars_seen", 0) == len(first), what="an idle checkpoint")
        proc.stdin.write(second.encode())
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        stop(proc)
    ref = charstream.Model("", hidden_size=8, seed=0)
    list(charstream.Trainer(ref).train([first + second]))
    assert_same_model(charstream.load(path), ref)


def _readers():
    return [t for t in threading.enumerate() if t.name == "charstream-reader"]


def test_with_idle_yields_in_order_and_calls_on_idle_while_quiet():
    """The source stays quiet until on_idle has been called twice (in the caller's thread): only
    on_idle can end the quiet, so the test cannot pass without it."""
    two_idles = threading.Event()
    idles = []

    def quiet_until_two_idles():
        yield "a"
        assert two_idles.wait(TIMEOUT), "on_idle was not called while the source was quiet"
        yield "b"

    def on_idle():
        idles.append(threading.current_thread() is threading.main_thread())
        if len(idles) == 2:
            two_idles.set()

    assert list(with_idle(quiet_until_two_idles(), 0.02, on_idle)) == ["a", "b"]
    assert len(idles) >= 2 and all(idles)


def test_with_idle_raises_the_sources_error_in_the_caller():
    def broken():
        yield "a"
        raise OSError("the disk went away")
    with pytest.raises(OSError, match="the disk went away"):
        list(with_idle(broken(), 0, lambda: None))


def test_with_idle_closed_early_ends_its_reader_thread():
    before = len(_readers())
    g = with_idle(itertools.repeat("text"), 0, lambda: None, prefetch=2)
    assert next(g) == "text"
    assert len(_readers()) == before + 1
    g.close()
    deadline = time.monotonic() + 5
    while len(_readers()) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_readers()) == before


# -- what the command line reads, from files and TCP (moved from test_qa.py and test_review.py)

def test_readme_open_recipe_gives_the_api_what_the_command_line_trains_on(tmp_path):
    data = "Всё смешалось\r\nв доме ".encode() + b"\xff\xfe" + " Облонских.\r\n".encode()
    (tmp_path / "ru.txt").write_bytes(data * 20)
    r = invoke("train", tmp_path / "ru.txt", "--model", tmp_path / "cli.npz", "--hidden-size", "8", "--random-seed", "3")
    assert r.exit_code == 0, r.output
    m = charstream.Model("", hidden_size=8, seed=3)
    with open(tmp_path / "ru.txt", encoding="utf-8", errors="replace", newline="") as f:
        list(charstream.Trainer(m).train(f))
    cli = charstream.load(tmp_path / "cli.npz")
    assert cli.vocab == m.vocab and "\r" in m.vocab and "\ufffd" in m.vocab
    np.testing.assert_array_equal(cli.params["Why"], m.params["Why"])


def test_eval_scores_a_tcp_source_as_its_help_says(ja_model):
    import socket
    import threading
    text = "吾輩は猫である。名前はまだ無い。" * 10
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(10)

    def serve():
        try:
            c, _ = srv.accept()
            with c:
                data = text.encode()
                c.sendall(data[:7])
                c.sendall(data[7:])
        finally:
            srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        help_text = invoke("eval", "--help").stdout
        assert "tcp://HOST:PORT" in help_text
        r = invoke("eval", f"tcp://127.0.0.1:{srv.getsockname()[1]}", "--model", ja_model[0], "--json")
        assert r.exit_code == 0, r.output
        assert '"chars_scored": %d' % (len(text) - 1) in r.stdout
    finally:
        t.join(timeout=10)


def test_a_later_source_that_cannot_connect_keeps_the_earlier_training(tmp_path, shakespeare):
    with socket.socket() as s:   # a port with nothing listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "a.txt").write_text(shakespeare[:2000])
    r = CliRunner().invoke(main, ["train", str(tmp_path / "a.txt"), f"tcp://127.0.0.1:{port}",
                                  "--model", str(tmp_path / "m.npz"), "--hidden-size", "8"])
    assert r.exit_code == 1
    assert "connection refused" in r.stderr and "what was trained before it is saved to" in r.stderr
    assert charstream.load(tmp_path / "m.npz").state.chars_seen == 2000
