"""``GET /metrics``: counters move as chats, refusals and resumes happen (Prometheus parser)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import socketio
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Recorder, RunningServer, make_token, run_server
from tests.upstream_double import UpstreamDouble

USER_MSG = [{"role": "user", "content": "Say hello"}]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(srv: RunningServer, headers: dict[str, str] | None = None) -> Samples:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{srv.url}/metrics", headers=headers or {}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counters_move_with_chats_refusals_and_resumes(
    upstream: UpstreamDouble,
    settings_for: Callable[..., Any],
    recorders: Callable[[], Recorder],
) -> None:
    async with run_server(settings_for(upstream_max_retries=1)) as srv:
        before = await scrape(srv)
        assert value(before, "llm_relay_requests_accepted_total", transport="socketio") == 0
        assert value(before, "llm_relay_build_info", version="0.1.0") == 1

        rec = recorders()
        await rec.connect(srv.url, make_token("alice"))
        await rec.wait_event("session")
        during = await scrape(srv)
        assert value(during, "llm_relay_connections", transport="socketio") == 1
        assert value(during, "llm_relay_connections", transport="websocket") == 0

        # ok
        ack = await rec.call("chat", {"request_id": "ok", "messages": USER_MSG})
        assert ack["ok"] is True
        assert (await rec.terminal("ok"))[0] == "done"
        ok_tokens = len(rec.tokens("ok"))
        # cancelled
        ack = await rec.call(
            "chat", {"request_id": "slow", "messages": USER_MSG, "model": "double/slow"}
        )
        assert ack["ok"] is True
        await rec.wait_for(lambda e, d: e == "token" and d["request_id"] == "slow")
        streaming = await scrape(srv)
        assert value(streaming, "llm_relay_active_streams") == 1
        assert await rec.call("cancel", {"request_id": "slow"}) == {"ok": True}
        assert (await rec.terminal("slow"))[1]["finish_reason"] == "cancelled"
        slow_tokens = len(rec.tokens("slow"))
        # upstream error: 502, one retry, 502 again
        ack = await rec.call(
            "chat", {"request_id": "bad", "messages": USER_MSG, "model": "double/http_502"}
        )
        assert ack["ok"] is True
        event, error = await rec.terminal("bad", timeout=15)
        assert (event, error["code"]) == ("error", "upstream_unavailable")
        # rejected: invalid payload
        ack = await rec.call("chat", {"request_id": "inv", "messages": []})
        assert ack["error"]["code"] == "invalid_payload"
        # resume of the finished request, and of an unknown one
        assert await rec.call("resume", {"request_id": "ok", "last_seq": -1}) == {"ok": True}
        missing = await rec.call("resume", {"request_id": "nope", "last_seq": -1})
        assert missing["error"]["code"] == "not_found"
        # refused connections: a bad token on both transports
        intruder = recorders()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await intruder.connect(srv.url, "not-a-jwt")
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{srv.ws_url}/websockets/openrouter?token=expired") as ws,
        ):
            frame = await ws.receive_json(timeout=5)
            assert frame["code"] == "unauthorized"

        after = await scrape(srv)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("llm_relay_requests_accepted_total", transport="socketio") == 3
    assert moved("llm_relay_requests_total", transport="socketio", outcome="done", code="none") == 1
    assert (
        moved("llm_relay_requests_total", transport="socketio", outcome="cancelled", code="none")
        == 1
    )
    assert (
        moved(
            "llm_relay_requests_total",
            transport="socketio",
            outcome="error",
            code="upstream_unavailable",
        )
        == 1
    )
    assert (
        moved(
            "llm_relay_requests_total",
            transport="socketio",
            outcome="rejected",
            code="invalid_payload",
        )
        == 1
    )
    assert moved("llm_relay_tokens_relayed_total", transport="socketio") == ok_tokens + slow_tokens
    assert moved("llm_relay_upstream_usage_tokens_total", kind="completion") > 0
    # time to first token: the ok and the cancelled request had one, the failed one not
    assert moved("llm_relay_time_to_first_token_seconds_count") == 2
    assert moved("llm_relay_stream_duration_seconds_count", outcome="done") == 1
    assert moved("llm_relay_stream_duration_seconds_count", outcome="cancelled") == 1
    assert moved("llm_relay_stream_duration_seconds_count", outcome="error") == 1
    assert moved("llm_relay_upstream_responses_total", status="200") == 2
    assert moved("llm_relay_upstream_responses_total", status="502") == 2
    assert moved("llm_relay_upstream_response_seconds_count") == 4
    assert moved("llm_relay_upstream_retries_total", reason="502") == 1
    assert moved("llm_relay_resumes_total", transport="socketio", result="ok") == 1
    assert moved("llm_relay_resumes_total", transport="socketio", result="not_found") == 1
    assert moved("llm_relay_auth_refusals_total", transport="socketio", code="unauthorized") == 1
    assert moved("llm_relay_auth_refusals_total", transport="websocket", code="unauthorized") == 1
    assert value(after, "llm_relay_active_streams") == 0


async def test_metrics_token_protects_the_endpoint(
    settings_for: Callable[..., Any],
) -> None:
    async with run_server(settings_for(metrics_token="scrape-me-0123456789")) as srv:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{srv.url}/metrics") as resp:
                assert resp.status == 401
                assert "llm_relay" not in await resp.text()
            wrong = {"Authorization": "Bearer scrape-me-wrong"}
            async with http.get(f"{srv.url}/metrics", headers=wrong) as resp:
                assert resp.status == 401
        samples = await scrape(srv, {"Authorization": "Bearer scrape-me-0123456789"})
        assert value(samples, "llm_relay_active_streams") == 0


async def test_gauges_follow_connections_and_streams(
    server: RunningServer, recorders: Callable[[], Recorder]
) -> None:
    recs = [recorders() for _ in range(3)]
    for rec in recs:
        await rec.connect(server.url, make_token("carol"))
        await rec.wait_event("session")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"{server.ws_url}/websockets/openrouter",
            headers={"Authorization": f"Bearer {make_token('dave')}"},
        ) as ws,
    ):
        await ws.send_json({"messages": USER_MSG, "model": "double/slow"})
        assert (await ws.receive_json(timeout=5))["type"] == "token"
        samples = await scrape(server)
        assert value(samples, "llm_relay_connections", transport="socketio") == 3
        assert value(samples, "llm_relay_connections", transport="websocket") == 1
        assert value(samples, "llm_relay_active_streams") == 1
        assert value(samples, "llm_relay_requests_accepted_total", transport="websocket") == 1
    for rec in recs:
        await rec.close()
    for _ in range(100):
        samples = await scrape(server)
        if (
            value(samples, "llm_relay_connections", transport="socketio") == 0
            and value(samples, "llm_relay_active_streams") == 0
        ):
            break
        await asyncio.sleep(0.05)
    assert value(samples, "llm_relay_connections", transport="socketio") == 0
    assert value(samples, "llm_relay_connections", transport="websocket") == 0
    assert value(samples, "llm_relay_active_streams") == 0
