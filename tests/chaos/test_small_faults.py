"""Fault 10: the small ones — a percent-encoded ``?%74oken=`` is redacted in the logs of a
real server process; a login body trickled for ever, or a request that never finishes,
does not hold the server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.chaos.processes import node_env, running
from tests.harness import run_server
from tests.upstream_double import UpstreamDouble

pytestmark = pytest.mark.chaos("10 small ones (log redaction, trickled bodies)")

SECRET = "opaque-Secret-4f9a2c"


async def test_a_percent_encoded_token_never_reaches_the_log(upstream: UpstreamDouble) -> None:
    async with running(node_env(upstream.base_url, LOG_LEVEL="info")) as node:
        async with aiohttp.ClientSession() as http:
            for query in (f"?%74oken={SECRET}", f"?x=1&%2574ok%65n={SECRET}"):
                url = f"{node.url}/health{query}"
                async with http.get(URL(url, encoded=True)) as resp:
                    assert resp.status == 200
        marker = "/health?x=1"
        for _ in range(100):  # the access log line of the last request
            if any(marker in line for line in node.output):
                break
            await asyncio.sleep(0.05)
    log = "".join(node.output)
    assert marker in log, log
    assert SECRET not in log, "lost: the token is in the log: " + log[-300:]


async def trickle(port: int, head: bytes, every_s: float, limit_s: float) -> tuple[bytes, float]:
    """Send ``head``, then one body byte every ``every_s``; what the server answers, when."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    writer.write(head)
    answer = b""
    try:
        while time.monotonic() - start < limit_s:
            try:
                chunk = await asyncio.wait_for(reader.read(4096), every_s)
            except TimeoutError:
                with contextlib.suppress(ConnectionError):
                    writer.write(b"u")
                continue
            if not chunk:
                break  # closed by the server
            answer += chunk
    finally:
        writer.close()
    return answer, time.monotonic() - start


async def test_a_trickled_login_body_or_unfinished_headers_do_not_hold_the_server(
    settings_for: Callable[..., Any],
) -> None:
    settings = settings_for(http_body_timeout_s=1, http_header_timeout_s=1)
    async with run_server(settings) as srv:
        body_head = (
            b"POST /auth/token HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 10000\r\n\r\n"
            b"username=alice&password="
        )
        header_head = b"POST /auth/token HTTP/1.1\r\nHost: x\r\nX-Slow: "
        (body, body_took), (_headers, headers_took) = await asyncio.gather(
            trickle(srv.port, body_head, 0.2, 10), trickle(srv.port, header_head, 0.2, 10)
        )
        async with aiohttp.ClientSession() as http, http.get(f"{srv.url}/health") as resp:
            assert resp.status == 200, "lost: the server stopped answering"
    assert body.startswith(b"HTTP/1.1 408"), f"lost: a trickled body got {body[:40]!r}"
    assert body_took < 4, f"lost: a trickled body held the server {body_took:.0f} s"
    assert headers_took < 4, f"lost: unfinished headers held the server {headers_took:.0f} s"
