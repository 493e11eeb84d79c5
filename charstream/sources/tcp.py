"""TCP sources: connect to `tcp://HOST:PORT`, or listen and read connections one after another."""
import socket
import warnings

from ..errors import CharstreamError, CharstreamWarning, SourceFailed
from .decode import read_stream

CONNECT_TIMEOUT = 30.0  # seconds to wait for a TCP connection; reads then wait as long as it takes


def parse_address(address, what, listen=False):
    """(host, port) from `HOST:PORT` (`[::1]:PORT` for IPv6); port 0 only to listen (any free port)."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    lo = 0 if listen else 1
    if not sep or not host or not port.isdigit() or not lo <= int(port) <= 65535:
        example = "127.0.0.1:5000" if listen else "tcp://127.0.0.1:5000"
        raise CharstreamError(f"{what}: expected HOST:PORT with a port from {lo} to 65535, e.g. {example}")
    return host, int(port)


def open_tcp(source):
    """The `tcp` source: connect to `tcp://HOST:PORT` now, then yield its text until the peer closes."""
    host, port = parse_address(source[len("tcp://"):], source)
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except ConnectionRefusedError:
        raise SourceFailed(f"{source}: connection refused (nothing listening on {host}:{port}?)") from None
    except socket.gaierror:
        raise SourceFailed(f"{source}: unknown host {host!r}") from None
    except socket.timeout:
        raise SourceFailed(f"{source}: no answer within {CONNECT_TIMEOUT:g} s") from None
    except OSError as e:
        raise SourceFailed(f"{source}: cannot connect: {e.strerror or e}") from None
    sock.settimeout(None)   # a live stream may stay quiet for as long as it likes
    return read_socket(sock, source)


def read_socket(sock, name):
    """Yield the text of a connected socket until its peer closes; closes the socket after."""
    with sock:
        try:
            yield from read_stream(sock.makefile("rb", buffering=0), name)
        except OSError as e:
            raise SourceFailed(f"{name}: connection dropped ({e.strerror or e})") from None


class Listener:
    """A TCP server bound now to `HOST:PORT` (port 0: any free one, see `.address`); iterating it
    accepts connections one after another and yields each one's text until its peer closes, forever
    (or `max_connections` times). A connection that drops is reported with a warning and the next
    one is accepted; each connection has its own UTF-8 decoder."""

    def __init__(self, address, max_connections=None, on_event=None):
        host, port = parse_address(address, f"--listen {address}", listen=True)
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.sock = socket.create_server((host, port), family=family)
        except socket.gaierror:
            raise CharstreamError(f"--listen {address}: unknown host {host!r}") from None
        except OSError as e:
            raise CharstreamError(f"cannot listen on {address}: {e.strerror or e}") from None
        bound_host, bound_port = self.sock.getsockname()[:2]
        self.address = f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
        self.max_connections = max_connections
        self.on_event = on_event or (lambda message: None)

    def __iter__(self):
        n = 0
        with self.sock:
            while self.max_connections is None or n < self.max_connections:
                conn, peer = self.sock.accept()
                n += 1
                name = "tcp connection from %s:%d" % peer[:2]
                self.on_event(f"{name}: open")
                try:
                    yield from read_socket(conn, name)
                except CharstreamError as e:
                    warnings.warn(str(e), CharstreamWarning, stacklevel=2)
                else:
                    self.on_event(f"{name}: closed")

    def close(self):
        self.sock.close()
