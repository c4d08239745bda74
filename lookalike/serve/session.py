"""The session: a token minted per server start, which every request that changes something must carry.

A request that changes something (any POST, PUT, PATCH or DELETE but the two that only ask
a question about an upload, ``QUERIES``) goes on only when

- it carries this server start's token in the ``X-Lookalike-Token`` header. The page reads
  it from ``GET /api/session``, which no other site can read (no CORS; the guard refuses
  cross-site requests, and on loopback foreign ``Host`` names);
- its ``Origin`` header is present and names this server (browsers send it on every POST);
- the server listens on a loopback address, or was started with ``--allow-actions``: beyond
  loopback, a page on the network could reach it through a rebound DNS name and read the token.

The guard applies this to every request before any route sees it, so a new route that
changes something is protected without a line of its own.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

TOKEN_HEADER = "X-Lookalike-Token"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
QUERIES = frozenset({"/api/search", "/api/predict"})  # POSTs only because an upload travels as multipart; they change nothing


@dataclass
class Session:
    """What one server start decides once.

    Args:
        allow_actions: allow requests that change something when the server listens beyond loopback.
        token: the secret such requests carry; a new random one by default.
    """

    allow_actions: bool = False
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def actions_allowed(self, loopback: bool) -> bool:
        """Whether requests that change something may go on at all, on a server listening on loopback or not."""
        return loopback or self.allow_actions

    def refusal(self, method: str, path: str, headers: dict[bytes, bytes], same_origin: bool, loopback: bool) -> str | None:
        """Why a request is refused, or None when it changes nothing or may go on.

        Args:
            method, path, headers: the request's (header names in lower case, as ASGI gives them).
            same_origin: its ``Origin`` header is present and names this server.
            loopback: the server listens on a loopback address.
        """
        if method not in UNSAFE or (method == "POST" and path in QUERIES):
            return None
        if not self.actions_allowed(loopback):
            return ("this server listens beyond loopback, so requests that change something are off: "
                    "start it with --allow-actions to allow them")
        if not same_origin:
            return "a request that changes something must come from this server's own page (its Origin header)"
        sent = headers.get(TOKEN_HEADER.lower().encode(), b"")
        if not hmac.compare_digest(sent, self.token.encode()):
            return f"a request that changes something needs this session's token in its {TOKEN_HEADER} header (GET /api/session)"
        return None
