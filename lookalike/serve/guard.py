"""The guard: the outermost layer of the app, which every request and every response passes.

- Security headers on every response, errors and 404s included (``nosniff`` above all:
  a file is never guessed into HTML by the browser).
- A limit on request bodies, counted as they arrive, so an upload of gigabytes is cut off
  after the limit rather than read; the endpoint then answers 413.
- On a loopback address, only loopback ``Host`` headers: a web page elsewhere can't
  reach the server through a DNS name rebound to 127.0.0.1 and read the images. Loopback
  or not is decided by the address the server's socket is bound to (``Server`` says, from
  ``getsockname``), never by how ``--host`` was spelled.
- No request from another site's page, on every path that does work (everything but the
  page, its static files, ``/api/info`` and the API's description): a ``Sec-Fetch-Site`` of
  ``cross-site`` or ``same-site``, or an ``Origin`` that is not this server, is refused
  before any search, thumbnail or file read starts. An ``<img>`` on any page could
  otherwise keep every core busy.
- Requests that change something need the session's token (``session``).
"""

from __future__ import annotations

import ipaddress
import json

from .session import Session
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
_DOCS = ("/docs", "/redoc")  # Swagger UI and ReDoc load their own script from a CDN: no CSP there (only with --api-docs)
# What any site may link to or load: the page itself, its script and style, and /api/info (no work, nothing private).
OPEN = frozenset({"/", "/favicon.ico", "/api/info", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
_OPEN_FOLDERS = ("/static/",)
LOOPBACK_FLAG = "lookalike.loopback"  # set in the scope: whether the server listens on loopback
_FORM_SLACK = 64 * 1024  # multipart framing and the small fields around an upload of the largest size
_DRAIN_LIMIT = 64 << 20  # a body over the limit is read and dropped up to this much, so the client hears the 413


class Guard:
    """Wraps an ASGI app.

    Args:
        app: the ASGI app.
        max_upload: the largest upload, in bytes; a body may hold a little more (the form around it).
        session: the token and the switch for requests that change something.
        docs: whether ``/docs`` and ``/redoc`` are served (they go without a CSP).

    Until ``listening_on`` is called (under another ASGI server than ``Server``), each
    request's own local address, the ASGI scope's ``server``, says whether it came in on loopback.
    """

    def __init__(self, app, max_upload: int, session: Session | None = None, docs: bool = False):
        self.app = app
        self.max_upload = max_upload
        self.max_body = max_upload + _FORM_SLACK
        self.session = session if session is not None else Session()
        self.docs = docs
        self.listening: bool | None = None

    def listening_on(self, address: str) -> None:
        """The address the server's socket is bound to (``getsockname()[0]``), as ``Server`` reports it."""
        self.listening = is_loopback(address)

    def loopback(self, scope) -> bool:
        """Whether the server listens on loopback only."""
        if self.listening is not None:
            return self.listening
        server = scope.get("server")
        return server is None or server[1] is None or is_loopback(str(server[0]))  # None, or a Unix socket: local

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = self._with_headers(scope, send)
        refused = self.refusal(scope)
        if refused is not None:
            await _drain(receive)  # so that the client hears the answer instead of a reset while it sends
            return await _reply(send, *refused)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            await _drain(receive)
            return await _reply(send, 413, f"the upload is {megabytes(int(declared))}, over the limit of "
                                           f"{megabytes(self.max_upload)}")
        return await self.app(scope, self._counted(scope, receive), send)

    def refusal(self, scope) -> tuple[int, str] | None:
        """The status and reason a request is refused for, or None: the Host, where it comes from, the session."""
        headers = dict(scope.get("headers") or [])
        loopback = scope[LOOPBACK_FLAG] = self.loopback(scope)
        host = headers.get(b"host", b"")
        if loopback and not is_loopback(_host_name(host)):
            return 400, "this server answers only to localhost, 127.0.0.1 or [::1]: use one of those in the URL"
        origin = headers.get(b"origin")
        same_origin = origin is not None and _same_origin(origin, host)
        path = scope["path"]
        if path not in OPEN and not path.startswith(_OPEN_FOLDERS):
            if headers.get(b"sec-fetch-site", b"").lower() in (b"cross-site", b"same-site"):
                return 403, "refused a request from another site's page: use this server's own page, or call the API directly"
            if origin is not None and not same_origin:
                return 403, (f"refused a request from {origin.decode('latin-1')[:100]}, another origin: "
                             f"use this server's own page, or call the API directly")
        reason = self.session.refusal(scope["method"], path, headers, same_origin, loopback)
        return (403, reason) if reason is not None else None

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

    def _with_headers(self, scope, send):
        csp = not (self.docs and scope["path"].startswith(_DOCS))

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


def _same_origin(origin: bytes, host: bytes) -> bool:
    """Whether an ``Origin`` header names the server the ``Host`` header names (the scheme aside: a proxy may add TLS)."""
    scheme, _, netloc = origin.decode("latin-1").strip().lower().partition("://")
    return scheme in ("http", "https") and bool(netloc) and netloc == host.decode("latin-1").strip().lower()


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
