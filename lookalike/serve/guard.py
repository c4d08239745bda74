"""The guard: the outermost layer of the app, which every request and every response passes.

- Security headers on every response, errors and 404s included (``nosniff`` above all:
  a file is never guessed into HTML by the browser).
- A limit on request bodies, counted as they arrive, so an upload of gigabytes is cut off
  after the limit rather than read; the endpoint then answers 413.
- On a loopback address, only loopback ``Host`` headers: a web page elsewhere can't
  reach the server through a DNS name rebound to 127.0.0.1 and read the images.
"""

from __future__ import annotations

import ipaddress
import json

from .uploads import TOO_LARGE_FLAG, megabytes

HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
# The page loads only its own script and style; images come from the API or the user's own blob: URLs.
CSP = (b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
       b"frame-ancestors 'none'; form-action 'self'")
_DOCS = ("/docs", "/redoc")  # Swagger UI and ReDoc load their own script from a CDN: no CSP there
_FORM_SLACK = 64 * 1024  # multipart framing and the small fields around an upload of the largest size
_DRAIN_LIMIT = 64 << 20  # a body over the limit is read and dropped up to this much, so the client hears the 413


class Guard:
    """Wraps an ASGI app.

    Args:
        app: the ASGI app.
        max_upload: the largest upload, in bytes; a body may hold a little more (the form around it).
        loopback_only: accept only ``Host`` headers naming this machine's loopback address.
    """

    def __init__(self, app, max_upload: int, loopback_only: bool = True):
        self.app = app
        self.max_upload = max_upload
        self.max_body = max_upload + _FORM_SLACK
        self.loopback_only = loopback_only

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = self._with_headers(scope, send)
        headers = dict(scope.get("headers") or [])
        if self.loopback_only and not is_loopback(_host_name(headers.get(b"host", b""))):
            return await _reply(send, 400, "this server answers only to localhost, 127.0.0.1 or [::1]: use one of those in the URL")
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            await _drain(receive)
            return await _reply(send, 413, f"the upload is {megabytes(int(declared))}, over the limit of "
                                           f"{megabytes(self.max_upload)}")
        return await self.app(scope, self._counted(scope, receive), send)

    def _counted(self, scope, receive):
        """``receive`` that hands on at most ``max_body`` bytes, then flags the scope and reports a disconnect."""
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    scope[TOO_LARGE_FLAG] = True
                    if message.get("more_body"):
                        await _drain(receive)
                    return {"type": "http.disconnect"}
            return message

        return counted

    @staticmethod
    def _with_headers(scope, send):
        csp = not scope["path"].startswith(_DOCS)

        async def sending(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS,
                                      *([(b"content-security-policy", CSP)] if csp else [])]
            await send(message)

        return sending


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only: localhost, 127.0.0.0/8 or ::1 (brackets allowed)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(host: bytes) -> str:
    """The host of a ``Host`` header, without its port."""
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):  # [::1]:8765
        return text.split("]")[0] + "]"
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


async def _drain(receive) -> None:
    """Read and drop the rest of a request body, up to a bound."""
    dropped = 0
    while dropped < _DRAIN_LIMIT:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return
        dropped += len(message.get("body", b""))


async def _reply(send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
