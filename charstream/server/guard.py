"""The checks every request passes before an endpoint sees it: the Host header, the API key, a JSON
content type for bodies; and the header every response carries (`X-Content-Type-Options: nosniff`).

A pure ASGI middleware, so that streamed responses pass through untouched. Refusals are OpenAI's
error shape: 421 for a Host the server does not answer to (a DNS-rebinding page), 401 without the
key, 415 for a POST body that is not `application/json` (a cross-origin "simple" POST is
`text/plain`). docs/server.md has the rules.
"""
import base64
import binascii
import hmac
import json

from .openai_schema import error_body

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
OPEN_PATHS = ("/health",)   # answered without the key (a load balancer's probe)


def host_name(header):
    """The name in a Host header, lower case, without its port: `[::1]:8000` -> `::1`."""
    host = header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """ASGI middleware: refuse what fails the checks, add nosniff to whatever is sent."""

    def __init__(self, app, allowed_hosts=LOOPBACK_HOSTS, api_key=None):
        self.app = app
        self.hosts = {h.strip().lower().strip("[]") for h in allowed_hosts}
        self.key = api_key.encode("utf-8") if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_nosniff(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []),
                                                 (b"x-content-type-options", b"nosniff")])
            await send(message)

        refusal = self.refusal(scope)
        if refusal is not None:
            status, headers, body = refusal
            await send_nosniff({"type": "http.response.start", "status": status,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode()), *headers]})
            await send_nosniff({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send_nosniff)

    def refusal(self, scope):
        """(status, extra headers, body) for a request refused, or None."""
        headers = {}
        for k, v in scope.get("headers", []):
            headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        host = host_name(headers.get("host", ""))
        if host not in self.hosts:
            return _error(421, f"this server does not answer to the host {host[:100]!r} (start it with "
                               f"--allow-host NAME to add one)", "invalid_host")
        path = scope.get("path", "")
        if self.key is not None and path not in OPEN_PATHS and not self.authorized(headers.get("authorization", "")):
            # the page is reached by a browser, which asks for a password on a Basic challenge
            challenge = b'Basic realm="charstream", charset="UTF-8"' if path == "/" else b"Bearer"
            return _error(401, "missing or incorrect API key: send the header Authorization: Bearer KEY",
                                        "invalid_api_key", [(b"www-authenticate", challenge)])
        has_body = headers.get("content-length", "0").strip() != "0" or "transfer-encoding" in headers
        if scope.get("method") not in ("GET", "HEAD") and has_body:
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return _error(415, f"the request body must be application/json, got {ctype[:100] or 'none'!r}",
                              "unsupported_media_type")
        return None

    def authorized(self, header):
        """`Bearer KEY`, or `Basic` with KEY as the password (any user name: what a browser sends)."""
        scheme, _, value = header.strip().partition(" ")
        value = value.strip().encode("latin-1", "replace")
        if scheme.lower() == "bearer":
            return hmac.compare_digest(value, self.key)
        if scheme.lower() == "basic":
            try:
                password = base64.b64decode(value, validate=True).partition(b":")[2]
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(password, self.key)
        return False


def _error(status, message, code, headers=()):
    body = json.dumps(error_body(message, "invalid_request_error", None, code)).encode()
    return status, list(headers), body
