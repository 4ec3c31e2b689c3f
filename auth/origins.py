"""Which browser origins may open a connection (cross-site WebSocket hijacking guard).

A request without ``Origin`` is not from a browser and is judged by its token alone.
Otherwise the origin must be the server's own (scheme and ``Host`` as the ASGI server
saw them; uvicorn applies ``X-Forwarded-*`` only from its trusted proxies) or be listed
in ``CORS_ORIGINS``.  An empty list means same origin only, never "any origin".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

_HTTP_SCHEME = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


class OriginPolicy:
    def __init__(self, allowed: Iterable[str]) -> None:
        self._allowed = frozenset(origin.rstrip("/").lower() for origin in allowed)
        self._any = "*" in self._allowed

    @property
    def allowed(self) -> frozenset[str]:
        return self._allowed

    def allows(self, origin: str | None, scope: Mapping[str, Any]) -> bool:
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        if self._any or origin in self._allowed:
            return True
        host = header(scope, b"host")
        if host is None:
            return False
        scheme = _HTTP_SCHEME.get(str(scope.get("scheme", "http")), "http")
        return origin == f"{scheme}://{host.lower()}"

    def allows_environ(self, origin: str | None, environ: Mapping[str, Any]) -> bool:
        """python-engineio's ``cors_allowed_origins`` callable form."""
        scope = environ.get("asgi.scope")
        return self.allows(origin, scope if isinstance(scope, Mapping) else {})


def header(scope: Mapping[str, Any], name: bytes) -> str | None:
    """One request header of an ASGI scope (``name`` lower-case), decoded as latin-1."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def peer_address(scope: Mapping[str, Any] | None) -> str:
    """The client's address as the ASGI server reports it (``X-Forwarded-For`` applied by
    uvicorn only for trusted proxies), never a header the client chose; for logs."""
    client = scope.get("client") if scope else None
    if isinstance(client, list | tuple) and client:
        return str(client[0])
    return "unknown"


def log_refusal(scope: Mapping[str, Any] | None, code: str, reason: str, transport: str) -> None:
    """One info line per refused connection: who (address), why — never the token."""
    address = peer_address(scope)
    logger.info(
        "refused a %s connection from %s: %s (%s)",
        transport,
        address,
        code,
        reason,
        extra={
            "event": "connection_refused",
            "code": code,
            "transport": transport,
            "peer": address,
        },
    )
