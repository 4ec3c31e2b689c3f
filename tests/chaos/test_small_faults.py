"""Fault 10: the small ones — a percent-encoded ``?%74oken=`` is redacted in the logs of a
real server process; a login body trickled for ever, or a request that never finishes,
does not hold the server."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from yarl import URL

from tests.chaos.processes import node_env, running
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
