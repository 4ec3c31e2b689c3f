"""`resume` on one node (in-memory stream log): lose the transport, come back, miss nothing."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.harness import Recorder, RunningServer, assert_clean_stream, make_token, run_server
from tests.integration.resume_helpers import (
    assert_live_then_replay,
    assert_resumed_stream,
    chat,
    connect,
    kept_text,
    wait_seq,
)
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import NORMAL_TEXT, SLOW_TEXT, Scenario, split_tokens

Settings = Callable[..., Any]


async def test_drop_then_resume_on_a_new_connection_gives_the_exact_text(
    upstream: UpstreamDouble, settings_for: Settings, recorders: Callable[[], Recorder]
) -> None:
    k = 7
    async with run_server(settings_for(resume_grace_s=10)) as srv:
        first = await connect(srv.url, recorders())
        assert (await first.call("chat", chat("r1")))["ok"] is True
        await wait_seq(first, "r1", k - 1)
        recorded = upstream.requests[-1]
        await first.drop()
        second = await connect(srv.url, recorders())
        assert await second.call("resume", {"request_id": "r1", "last_seq": k - 1}) == {"ok": True}
        event, done = await second.terminal("r1", timeout=30)
        assert (event, done["finish_reason"]) == ("done", "stop")
        assert_resumed_stream(second, "r1", k)
        assert kept_text(first, "r1", k) + second.text("r1") == SLOW_TEXT
        assert recorded.completed
        assert not recorded.closed_by_client
        assert [e for e, _ in first.of("r1")].count("done") == 0  # it was gone by then


async def test_resume_after_the_end_replays_the_tail_and_the_terminal(
    settings_for: Callable[..., Any], recorders: Callable[[], Recorder], upstream: UpstreamDouble
) -> None:
    upstream.scenarios["steady"] = Scenario(name="steady", delay_s=0.01)
    # one token event per delta (no coalescing): the test counts them
    async with run_server(settings_for(token_coalesce_ms=0)) as server:
        await _resume_after_the_end(server, recorders)


async def _resume_after_the_end(server: RunningServer, recorders: Callable[[], Recorder]) -> None:
    rec = await connect(server.url, recorders())
    await rec.call("chat", chat("f1", "double/steady"))
    await rec.terminal("f1")
    original = rec.of("f1")
    assert len(original) == len(split_tokens(NORMAL_TEXT)) + 1
    later = await connect(server.url, recorders())
    assert await later.call("resume", {"request_id": "f1", "last_seq": 3}) == {"ok": True}
    await later.terminal("f1")
    assert later.of("f1") == original[4:]
    everything = await connect(server.url, recorders())
    await everything.call("resume", {"request_id": "f1", "last_seq": -1})
    await everything.terminal("f1")
    assert everything.of("f1") == original
    assert everything.text("f1") == NORMAL_TEXT
    # last_seq at (or past) the end: only the terminal event
    tail = await connect(server.url, recorders())
    ack = await tail.call("resume", {"request_id": "f1", "last_seq": len(original) + 5})
    assert ack == {"ok": True}
    await tail.terminal("f1")
    assert tail.of("f1") == original[-1:]


async def test_resume_on_the_same_connection_never_duplicates(
    server: RunningServer, recorders: Callable[[], Recorder], upstream: UpstreamDouble
) -> None:
    """The request streams live to this very sid: the log replay replaces the live copy."""
    upstream.scenarios["quick"] = Scenario(name="quick", text=SLOW_TEXT, delay_s=0.03)
    rec = await connect(server.url, recorders())
    await rec.call("chat", chat("s1", "double/quick"))
    await wait_seq(rec, "s1", 4)
    had = len(rec.tokens("s1"))
    assert await rec.call("resume", {"request_id": "s1", "last_seq": 2}) == {"ok": True}
    await rec.terminal("s1", timeout=20)
    await asyncio.sleep(0.3)
    # the live part until the resume, then the replay from seq 3 on, each token once
    assert_live_then_replay(rec, "s1", 3, SLOW_TEXT)
    assert len(rec.tokens("s1")) > had


async def test_nobody_resumes_the_upstream_is_closed_after_the_grace_period(
    upstream: UpstreamDouble, settings_for: Settings, recorders: Callable[[], Recorder]
) -> None:
    async with run_server(settings_for(resume_grace_s=0.8)) as srv:
        rec = await connect(srv.url, recorders())
        await rec.call("chat", chat("g1"))
        await wait_seq(rec, "g1", 1)
        recorded = upstream.requests[-1]
        dropped_at = time.monotonic()
        await rec.drop()
        await upstream.wait_closed(recorded, timeout=10)
        assert recorded.closed_by_client
        assert recorded.closed_at is not None
        assert recorded.closed_at - dropped_at >= 0.7, "closed before the grace period"
        # the abandoned request still ended properly in the log: resumable, one terminal
        later = await connect(srv.url, recorders())
        await later.call("resume", {"request_id": "g1", "last_seq": -1})
        event, done = await later.terminal("g1")
        assert (event, done["finish_reason"]) == ("done", "cancelled")
        assert_clean_stream(later, "g1")
        assert srv.app.runtime.registry.all() == []


async def test_a_resume_within_the_grace_period_keeps_the_stream_running(
    upstream: UpstreamDouble, settings_for: Settings, recorders: Callable[[], Recorder]
) -> None:
    upstream.scenarios["quick"] = Scenario(name="quick", text=SLOW_TEXT, delay_s=0.06)
    async with run_server(settings_for(resume_grace_s=0.5)) as srv:
        rec = await connect(srv.url, recorders())
        await rec.call("chat", chat("k1", "double/quick"))
        await wait_seq(rec, "k1", 2)
        recorded = upstream.requests[-1]
        await rec.drop()
        back = await connect(srv.url, recorders())
        await back.call("resume", {"request_id": "k1", "last_seq": 2})
        event, done = await back.terminal("k1", timeout=20)  # ~3 s, far past the grace
        assert (event, done["finish_reason"]) == ("done", "stop")
        assert recorded.completed
        assert not recorded.closed_by_client
        assert kept_text(rec, "k1", 3) + back.text("k1") == SLOW_TEXT


async def test_resumed_connection_owns_the_request_again(
    upstream: UpstreamDouble, settings_for: Settings, recorders: Callable[[], Recorder]
) -> None:
    """After a resume the new connection decides: its deliberate disconnect stops it."""
    async with run_server(settings_for(resume_grace_s=30)) as srv:
        rec = await connect(srv.url, recorders())
        await rec.call("chat", chat("o1"))
        await wait_seq(rec, "o1", 0)
        recorded = upstream.requests[-1]
        await rec.drop()
        back = await connect(srv.url, recorders())
        await back.call("resume", {"request_id": "o1", "last_seq": 0})
        await wait_seq(back, "o1", 2)
        await back.leave()
        assert await upstream.wait_closed(recorded, timeout=5) < 5
        assert recorded.closed_by_client


async def test_cancel_of_a_detached_request_closes_it_at_once(
    server: RunningServer, recorders: Callable[[], Recorder], upstream: UpstreamDouble
) -> None:
    rec = await connect(server.url, recorders())
    await rec.call("chat", chat("c1"))
    await wait_seq(rec, "c1", 1)
    recorded = upstream.requests[-1]
    await rec.drop()
    back = await connect(server.url, recorders())
    assert await back.call("cancel", {"request_id": "c1"}) == {"ok": True}
    assert await upstream.wait_closed(recorded, timeout=2) < 2
    assert recorded.closed_by_client
    await back.call("resume", {"request_id": "c1", "last_seq": 1})
    event, done = await back.terminal("c1")
    assert (event, done["finish_reason"]) == ("done", "cancelled")
    assert_resumed_stream(back, "c1", 2)


async def test_another_users_resume_is_forbidden_and_unknown_ids_not_found(
    server: RunningServer, recorders: Callable[[], Recorder]
) -> None:
    alice = await connect(server.url, recorders())
    await alice.call("chat", chat("mine"))
    await wait_seq(alice, "mine", 0)
    bob = await connect(server.url, recorders(), "bob")
    refused = await bob.call("resume", {"request_id": "mine", "last_seq": -1})
    assert refused["ok"] is False
    assert refused["error"]["code"] == "forbidden"
    assert refused["error"]["retryable"] is False
    unknown = await bob.call("resume", {"request_id": "nobody-has-this", "last_seq": -1})
    assert unknown["error"]["code"] == "not_found"
    bad = await bob.call("resume", {"request_id": "mine", "last_seq": -2})
    assert bad["error"]["code"] == "invalid_payload"
    missing = await bob.call("resume", {"request_id": "mine"})
    assert missing["error"]["code"] == "invalid_payload"
    await asyncio.sleep(0.3)
    assert bob.of("mine") == []  # nothing of alice's stream reached bob
    await alice.call("cancel", {"request_id": "mine"})
    await alice.terminal("mine")


async def test_expired_ids_are_not_found(
    upstream: UpstreamDouble, settings_for: Settings, recorders: Callable[[], Recorder]
) -> None:
    async with run_server(settings_for(resume_retention_s=0.3)) as srv:
        rec = await connect(srv.url, recorders())
        await rec.call("chat", chat("e1", "double/normal"))
        await rec.terminal("e1")
        assert (await rec.call("resume", {"request_id": "e1", "last_seq": -1}))["ok"] is True
        await asyncio.sleep(0.6)
        gone = await rec.call("resume", {"request_id": "e1", "last_seq": -1})
        assert gone["ok"] is False
        assert gone["error"]["code"] == "not_found"


async def test_memory_is_bounded_after_1000_finished_requests(
    upstream: UpstreamDouble, settings_for: Settings
) -> None:
    settings = settings_for(
        resume_retention_s=1.5, rate_limit_per_minute=5000, max_streams_per_user=64
    )
    async with run_server(settings) as srv:
        await run_many_over_websocket(srv, 1000, parallel=8)
        runtime = srv.app.runtime
        assert await runtime.log.size() > 0  # the latest are still kept for resume
        deadline = time.monotonic() + 15
        while await runtime.log.size() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await runtime.log.size() == 0
        assert len(runtime.registry) == 0
        assert not runtime.sio_events.tails
    assert sum(r.completed for r in upstream.requests) == 1000


async def run_many_over_websocket(srv: Any, total: int, *, parallel: int) -> None:
    """``total`` quick requests over ``parallel`` raw WebSockets; each must end in ``done``."""
    counter = iter(range(total))
    headers = {"Authorization": f"Bearer {make_token('alice')}"}

    async def worker(http: aiohttp.ClientSession) -> None:
        async with http.ws_connect(f"{srv.ws_url}/websockets/openrouter", headers=headers) as ws:
            for i in counter:
                await ws.send_json({**chat(f"m{i}", "double/normal")})
                while True:
                    frame = await ws.receive_json(timeout=20)
                    if frame["type"] in ("done", "error"):
                        assert frame["type"] == "done", frame
                        break

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(worker(http) for _ in range(parallel)))


# -- raw WebSocket ---------------------------------------------------------------------


async def test_raw_websocket_resume_after_a_lost_connection(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    upstream.scenarios["quick"] = Scenario(name="quick", text=SLOW_TEXT, delay_s=0.05)
    url = f"{server.ws_url}/websockets/openrouter"
    headers = {"Authorization": f"Bearer {make_token('alice')}"}
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url, headers=headers)
        await ws.send_json(chat("w1", "double/quick"))
        first = [await ws.receive_json(timeout=5) for _ in range(5)]
        assert [f["seq"] for f in first] == [0, 1, 2, 3, 4]
        ws._conn.transport.abort()  # type: ignore[union-attr]  # no close frame: a lost network
        await ws.close()
        async with http.ws_connect(url, headers=headers) as again:
            await again.send_json({"type": "resume", "request_id": "w1", "last_seq": 4})
            frames = await frames_until_terminal(again)
            assert frames[-1]["type"] == "done"
            assert frames[-1]["finish_reason"] == "stop"
            tokens = frames[:-1]
            assert [t["seq"] for t in tokens] == list(range(5, 5 + len(tokens)))
            text = "".join(f["content"] for f in first) + "".join(t["content"] for t in tokens)
            assert text == SLOW_TEXT
            await again.send_json({"type": "resume", "request_id": "nope", "last_seq": -1})
            error = await again.receive_json(timeout=5)
            assert (error["type"], error["code"], error["request_id"]) == (
                "error",
                "not_found",
                "nope",
            )
    assert upstream.requests[-1].completed


async def test_raw_websocket_resume_in_completion_format_sends_typed_tokens(
    settings_for: Callable[..., Any], upstream: UpstreamDouble
) -> None:
    upstream.scenarios["steady"] = Scenario(name="steady", delay_s=0.01)
    token = make_token("alice")
    # one token event per delta (no coalescing): the test counts them
    async with run_server(settings_for(token_coalesce_ms=0)) as server:
        url = f"{server.ws_url}/websockets/openrouter?format=completion&token={token}"
        frames = await _completion_resume(url)
    assert {f["type"] for f in frames[:-1]} == {"token"}
    assert "".join(f["content"] for f in frames[:-1]) == NORMAL_TEXT
    assert len(frames) - 1 == len(split_tokens(NORMAL_TEXT))


async def _completion_resume(url: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_json(chat("wc", "double/steady"))
        await frames_until_terminal(ws)
        await ws.send_json({"type": "resume", "request_id": "wc", "last_seq": -1})
        return await frames_until_terminal(ws)


async def frames_until_terminal(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while True:
        frame = await ws.receive_json(timeout=20)
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            return frames


# -- rooms -----------------------------------------------------------------------------


async def enter_room(srv: RunningServer, rec: Recorder, room: str) -> None:
    """``join``; before the rooms feature is merged, a minimal join: the sid enters it."""
    if importlib.util.find_spec("events.core.rooms") is not None:
        ack = await rec.call("join", {"room": room})
        assert ack["ok"] is True, ack
        return
    sid = rec.client.get_sid()
    await srv.app.runtime.sio.enter_room(sid, room)
    conn = srv.app.runtime.connections.get(sid)
    assert conn is not None
    conn.rooms.add(room)


async def test_a_room_member_resumes_and_gets_each_token_once(
    server: RunningServer, recorders: Callable[[], Recorder], upstream: UpstreamDouble
) -> None:
    """Bob is in the room, so the answer also reaches him live: after his resume, the
    live copies skip him and the log feeds him, each token once."""
    upstream.scenarios["quick"] = Scenario(name="quick", text=SLOW_TEXT, delay_s=0.03)
    alice = await connect(server.url, recorders())
    bob = await connect(server.url, recorders(), "bob")
    carol = await connect(server.url, recorders(), "carol")
    for rec in (alice, bob):
        await enter_room(server, rec, "lobby")
    assert (await alice.call("chat", chat("rm1", "double/quick", room="lobby")))["ok"] is True
    await wait_seq(bob, "rm1", 5)
    assert await bob.call("resume", {"request_id": "rm1", "last_seq": 2}) == {"ok": True}
    refused = await carol.call("resume", {"request_id": "rm1", "last_seq": -1})
    assert refused["error"]["code"] == "forbidden"
    await bob.terminal("rm1", timeout=20)
    await alice.terminal("rm1", timeout=20)
    await asyncio.sleep(0.3)
    assert_live_then_replay(bob, "rm1", 3, SLOW_TEXT)
    assert all(d.get("room") == "lobby" for _, d in bob.of("rm1"))
    assert_clean_stream(alice, "rm1")  # the others are untouched
    assert alice.text("rm1") == SLOW_TEXT
    assert carol.of("rm1") == []
