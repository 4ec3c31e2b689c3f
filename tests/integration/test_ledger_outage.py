"""A database that stops answering mid-run: chats stream on, and no ledger row is lost.

PostgreSQL is reached through a TCP proxy in its own process; SIGSTOP on the proxy makes
the database hang (connections open, nothing answers) without touching the server.
"""

from __future__ import annotations

import signal
import statistics
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from sqlalchemy.engine import make_url

from tests.harness import Recorder, make_token, run_server
from tests.integration.test_usage import chat, get, usage_settled
from tests.postgres_server import fresh_database
from tests.tcp_proxy import tcp_proxy
from tests.upstream_double import UpstreamDouble


async def timed_chats(rec: Recorder, seconds: float) -> list[float]:
    durations = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        event, payload = await chat(rec)
        assert event == "done", payload
        durations.append(time.monotonic() - started)
    return durations


async def test_chats_stream_while_the_database_hangs_and_every_row_lands_after(
    upstream: UpstreamDouble,
    settings_for: Callable[..., Any],
    recorders: Callable[[], Recorder],
    postgres_server_url: str,
) -> None:
    async with fresh_database(postgres_server_url) as plain_url:
        url = make_url(plain_url)
        with tcp_proxy(url.host or "127.0.0.1", url.port or 5432) as (port, proxy):
            proxied = url.set(drivername="postgresql+asyncpg", port=port)
            settings = settings_for(
                database_url=proxied.render_as_string(hide_password=False),
                database_timeout_s=1,
                rate_limit_per_minute=100_000,
            )
            async with run_server(settings) as server:
                token = make_token("alice")
                rec = recorders()
                await rec.connect(server.url, token)
                before = await timed_chats(rec, 1.5)
                await usage_settled(server, token, len(before))
                proxy.send_signal(signal.SIGSTOP)
                try:
                    during = await timed_chats(rec, 10)  # the database stopped for 10 s
                    started = time.monotonic()
                    status, _ = await get(server.url + "/usage/me", token)
                    assert status == 503
                    assert time.monotonic() - started < 3
                    assert server.app.runtime.ledger is not None
                    assert server.app.runtime.ledger.usage.failing
                    async with (
                        aiohttp.ClientSession() as http,
                        http.get(server.url + "/metrics") as resp,
                    ):
                        assert "llm_relay_ledger_pending " in await resp.text()
                    pending = server.app.runtime.ledger.backlog()[0]
                    assert pending > 0
                    status, ready = await get(server.url + "/health/ready", None)
                    assert (status, ready["status"]) == (200, "degraded")  # still in rotation
                    assert ready["checks"]["database"] == "degraded"
                finally:
                    proxy.send_signal(signal.SIGCONT)
                total = len(before) + len(during)
                body = await usage_settled(server, token, total)
                assert body["today"]["requests"] == total
                status, ready = await get(server.url + "/health/ready", None)
                assert (status, ready["checks"]["database"]) == (200, "ok")
                # The database never delayed a token: the same latency with it hanging.
                assert statistics.median(during) < statistics.median(before) * 1.5 + 0.05
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(server.url + "/metrics") as resp,
                ):
                    metrics = await resp.text()
                assert 'llm_relay_model_cost_usd_total{model="' in metrics
                assert "llm_relay_ledger_pending 0.0" in metrics
                assert "llm_relay_ledger_dropped 0.0" in metrics
