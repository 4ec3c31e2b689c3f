"""Several workers on one port (``uvicorn --workers 2``) with ``PROMETHEUS_MULTIPROC_DIR``:
whichever worker answers a scrape, ``/metrics`` reports the sum over all workers."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import free_port
from tests.harness import (
    API_KEY,
    JWT_SECRET,
    Recorder,
    make_token,
    scratch_database_url,
)
from tests.integration.test_metrics import value
from tests.upstream_double import UpstreamDouble

USER_MSG = [{"role": "user", "content": "Say hello"}]
CHATS = 6


async def scrape_url(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_workers_sharing_a_port_report_the_sum(
    upstream: UpstreamDouble, recorders: Callable[[], Recorder], tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "JWT_SECRET": JWT_SECRET,
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": upstream.base_url,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "METRICS_REFRESH_S": "0.2",
        "DATABASE_URL": scratch_database_url(),  # not in the metrics directory: *.db there
        "LOG_LEVEL": "warning",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "server.main:app",
        "--workers",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ws",
        "websockets-sansio",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.returncode is None, "uvicorn exited"
            try:
                samples = await scrape_url(url)
                # both workers are up once both wrote their files
                if len({p.name.rsplit("_", 1)[-1] for p in tmp_path.glob("counter_*.db")}) >= 2:
                    break
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, "workers did not start"
            await asyncio.sleep(0.1)

        recs = []
        for i in range(CHATS):  # websocket transport: no sticky sessions needed
            rec = recorders()
            await rec.connect(url, make_token(f"user{i}"))
            ack = await rec.call("chat", {"request_id": f"r{i}", "messages": USER_MSG})
            assert ack["ok"] is True
            assert (await rec.terminal(f"r{i}"))[0] == "done"
            recs.append(rec)

        # every scrape, whichever worker answers, sees all requests and connections
        await asyncio.sleep(0.6)  # > METRICS_REFRESH_S: each worker published its gauges
        for _ in range(8):
            samples = await scrape_url(url)
            done = value(
                samples,
                "llm_relay_requests_total",
                transport="socketio",
                outcome="done",
                code="none",
            )
            assert done == CHATS
            assert (
                value(samples, "llm_relay_requests_accepted_total", transport="socketio") == CHATS
            )
            assert value(samples, "llm_relay_connections", transport="socketio") == CHATS
            assert value(samples, "llm_relay_upstream_responses_total", status="200") == CHATS
            assert value(samples, "llm_relay_time_to_first_token_seconds_count") == CHATS
        for rec in recs:
            await rec.close()
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    # workers that stopped took their live gauges with them
    assert not list(tmp_path.glob("gauge_livesum_*.db"))
