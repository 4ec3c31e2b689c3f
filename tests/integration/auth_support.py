"""Shared pieces of the auth tests: keys, a JWKS server, raw WebSocket helpers, and a
log capture that fails a module whose logs show the upstream key or any token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from server.logs import RedactingFilter
from tests.harness import API_KEY, JWT_SECRET, Recorder, make_token

# Every token a test minted or the server issued; none may ever show up in a log.
TOKENS_SEEN: set[str] = set()

USER_MSG = [{"role": "user", "content": "Say hello"}]


def mint(sub: str | None = "alice", **kwargs: Any) -> str:
    """``make_token`` that remembers the token for the log check."""
    token = make_token(sub, **kwargs)  # type: ignore[arg-type]  # sub=None: no claim
    TOKENS_SEEN.add(token)
    return token


def remember(token: str) -> str:
    TOKENS_SEEN.add(token)
    return token


# -- keys ------------------------------------------------------------------------------


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def public_jwk(key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, **extra}


def signed(
    key: Any,
    *,
    sub: str | None = "alice",
    alg: str = "RS256",
    kid: str | None = None,
    ttl: float = 3600,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {"kid": kid} if kid else None
    return remember(jwt.encode(payload, key, algorithm=alg, headers=headers))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(sub: str = "alice") -> str:
    """``alg: none`` — no signature at all."""
    now = int(time.time())
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": sub, "iat": now, "exp": now + 3600}).encode())
    return remember(f"{header}.{body}.")


def hs256_with_key_bytes(key_bytes: bytes, sub: str = "alice") -> str:
    """The HS/RS confusion attack: HS256 'signed' with the RSA public key's PEM bytes."""
    now = int(time.time())
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": sub, "iat": now, "exp": now + 3600}).encode())
    signing_input = f"{header}.{body}".encode()
    signature = hmac.new(key_bytes, signing_input, hashlib.sha256).digest()
    return remember(f"{header}.{body}.{b64url(signature)}")


# -- a JWKS endpoint -------------------------------------------------------------------


class JwksServer:
    """An identity provider's key set on a loopback port; keys can be swapped live."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.requests = 0
        self.status = 200
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, _request: web.Request) -> web.Response:
        self.requests += 1
        if self.status != 200:
            return web.Response(status=self.status)
        return web.json_response({"keys": self.keys})

    async def __aenter__(self) -> JwksServer:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# -- clients ---------------------------------------------------------------------------


async def refused(url: str, token: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Connect and expect a refusal; return the ``connect_error`` payload."""
    rec = Recorder()
    try:
        with pytest.raises(Exception):  # noqa: B017, PT011 - socketio.exceptions.ConnectionError
            await rec.connect(url, token, **kwargs)
    finally:
        await rec.close()
    assert isinstance(rec.connect_error, dict), rec.events
    return rec.connect_error


@asynccontextmanager
async def raw_ws(
    url: str, *, token: str | None = None, headers: dict[str, str] | None = None, query: str = ""
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    full = f"{url}/websockets/openrouter{query}"
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(full, headers=hdrs, max_msg_size=0, autoping=True) as ws,
    ):
        yield ws


async def next_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> Any:
    msg = await ws.receive(timeout=timeout)
    if msg.type != aiohttp.WSMsgType.TEXT:
        raise AssertionError(f"expected a text frame, got {msg.type} {msg.data!r}")
    return json.loads(msg.data)


_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)


async def closed_with(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> int | None:
    """Read until the server closes; return its close code."""
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type in _CLOSED:
            with suppress(Exception):
                await ws.close()
            return ws.close_code
        if msg.type == aiohttp.WSMsgType.ERROR:
            return ws.close_code


async def polling_connect(
    http: aiohttp.ClientSession, url: str, token: str, headers: dict[str, str]
) -> str | None:
    """A Socket.IO session over the polling transport, by hand; its URL, or ``None``.

    By hand because python-engineio's client takes a whole ping interval to close a
    polling session.
    """
    base = f"{url}/socket.io/?EIO=4&transport=polling"
    async with http.get(base, headers=headers) as resp:
        if resp.status != 200:
            return None
        origin = headers.get("Origin")
        if origin is not None:
            assert resp.headers.get("Access-Control-Allow-Origin") == origin
        handshake = json.loads((await resp.text())[1:])
    sid_url = f"{base}&sid={handshake['sid']}"
    auth = json.dumps({"token": token})
    async with http.post(sid_url, data=f"40{auth}", headers=headers) as resp:
        assert resp.status == 200
    async with http.get(sid_url, headers=headers) as resp:
        packets = (await resp.text()).split("\x1e")
    return sid_url if packets[0].startswith("40{") else None


# -- log capture ---------------------------------------------------------------------------


class LogCapture:
    """Everything logged anywhere in the process, through the production redaction filter."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.addFilter(RedactingFilter((API_KEY, JWT_SECRET)))
        self.handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.handler.setLevel(logging.DEBUG)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def leaks(self) -> list[str]:
        text = self.text
        found = [token[:24] + "…" for token in TOKENS_SEEN if token in text]
        for secret in (API_KEY, JWT_SECRET):
            if secret in text:
                found.append("a configured secret")
        return found


@pytest.fixture(scope="module", autouse=True)
def no_secrets_in_logs() -> Iterator[LogCapture]:
    """Module-wide: capture every log record at DEBUG and check it at the end."""
    capture = LogCapture()
    root = logging.getLogger()
    access = logging.getLogger("uvicorn.access")
    old_level, old_propagate = root.level, access.propagate
    root.addHandler(capture.handler)
    root.setLevel(logging.DEBUG)
    access.propagate = True
    try:
        yield capture
    finally:
        root.removeHandler(capture.handler)
        root.setLevel(old_level)
        access.propagate = old_propagate
    leaks = capture.leaks()
    assert not leaks, f"secrets in the logs: {leaks}"
