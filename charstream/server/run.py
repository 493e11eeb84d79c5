"""Running the app under uvicorn on a socket bound beforehand, stopping generations on SIGINT/SIGTERM."""
import ipaddress
import socket

import uvicorn

GRACE = 5   # seconds the shutdown waits for responses before it cancels them


def bind(host, port):
    """A listening TCP socket on host:port (port 0: a free one); OSError if it cannot be had."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def url(sock):
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def is_loopback(sock):
    return ipaddress.ip_address(sock.getsockname()[0].split("%")[0]).is_loopback


class Server(uvicorn.Server):
    """uvicorn's server over one bound socket; a signal or `stop()` ends running generations first,
    so that open streams (an endless `/generate`) close instead of holding the shutdown."""

    def __init__(self, app, sock, on_started=None):
        super().__init__(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                        timeout_graceful_shutdown=GRACE))
        self.app_slots, self.sock, self.on_started = app.state.slots, sock, on_started

    async def startup(self, sockets=None):
        await super().startup(sockets)
        if self.started and self.on_started:
            self.on_started(url(self.sock))

    def handle_exit(self, sig, frame):
        self.app_slots.stopping.set()
        super().handle_exit(sig, frame)

    def stop(self):
        """Shut down from another thread: as a signal does."""
        self.app_slots.stopping.set()
        self.should_exit = True

    def run(self):
        super().run(sockets=[self.sock])
