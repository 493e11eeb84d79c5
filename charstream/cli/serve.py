"""`charstream serve`: the model over HTTP (OpenAI-compatible completions, a curl endpoint, a page)."""
import os

import click

from ..errors import CharstreamError
from .common import Terminated, fail, load_model, model_option, quiet_exit, resolve_model_path, say, sigterm_raises


@click.command()
@model_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback lets the network in: give it --api-key.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on; 0 picks a free one (the printed URL shows it).")
@click.option("--parallel", type=click.IntRange(min=1), default=32, show_default=True,
              help="Generations at once, stepped together (a request with n choices takes n); beyond, a 503 at once.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads of the kernel that steps all generations together (results never depend on it).")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="Also answer requests whose Host header names NAME (repeatable); by default only "
                   "localhost, 127.0.0.1, ::1 and the --host address are answered.")
@click.option("--api-key", envvar="CHARSTREAM_API_KEY", default=None, metavar="KEY",
              help="Require `Authorization: Bearer KEY` on every endpoint but /health "
                   "(default: $CHARSTREAM_API_KEY; the page takes KEY as its password).")
def serve(model_path, host, port, parallel, threads, allow_hosts, api_key):
    """Serve the model over HTTP until Ctrl-C or SIGTERM; a new model file is picked up by the next request.

    \b
    Endpoints (see docs/server.md):
      GET  /                 a page that writes as you watch
      GET  /generate         text/plain stream: ?prompt=To+be&length=500
      POST /v1/completions   OpenAI-compatible, with "stream": true for server-sent events
      GET  /v1/models        the model, as OpenAI lists them
      GET  /info             the model's facts (V, H, characters trained, recent loss)

    \b
    Examples:
      charstream serve
      curl -N 'http://127.0.0.1:8000/generate?prompt=To+be&length=500'
    """
    try:
        from ..server.app import create_app
        from ..server.models import ModelRegistry
        from ..server.run import Server, bind, is_loopback
    except ImportError as e:
        raise click.ClickException(f"serve needs the server extra ({e.name} is missing): "
                                   f"pip install 'charstream[serve]'") from None
    path = resolve_model_path(model_path)
    if not os.path.exists(path):
        load_model(path)   # the CLI's message for a missing model, saying how to train one
    from ..server.guard import LOOPBACK_HOSTS
    hosts = [*LOOPBACK_HOSTS, host, *allow_hosts]
    try:
        app = create_app(path, parallel, ModelRegistry(path), allowed_hosts=hosts, api_key=api_key or None,
                         threads=threads)
    except CharstreamError as e:
        raise fail(e) from None
    try:
        sock = bind(host, port)
    except (OSError, UnicodeError) as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    if not is_loopback(sock) and not api_key:
        say(f"Warning: listening on {host}, not loopback, without --api-key: anyone who can reach this "
            f"machine can use the server")
    server = Server(app, sock, on_started=lambda u: say(f"serving on {u}"))
    try:   # Ctrl-C ends it with 130, SIGTERM with 0, after the open responses end
        with sigterm_raises():
            server.run()
    except KeyboardInterrupt:
        quiet_exit(130)
    except Terminated:
        quiet_exit(0)
    finally:
        sock.close()
