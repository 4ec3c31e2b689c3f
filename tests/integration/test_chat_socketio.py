"""`chat` over Socket.IO against a real server and the upstream double."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.harness import Recorder, RunningServer, assert_clean_stream, make_token
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import NORMAL_TEXT, PARTIAL_SENT, UTF8_TEXT

USER_MSG = [{"role": "user", "content": "Say hello"}]


async def connected(server: RunningServer, recorders: Callable[[], Recorder]) -> Recorder:
    rec = recorders()
    await rec.connect(server.url, make_token("alice", name="Alice"))
    return rec


async def test_session_event_describes_user_and_limits(
    server: RunningServer, recorders: Callable[[], Recorder]
) -> None:
    rec = await connected(server, recorders)
    session = await rec.wait_event("session")
    assert session["user"] == {"id": "alice", "name": "Alice"}
    assert session["protocol"] == 2
    assert session["limits"]["max_streams_per_connection"] == 4
    assert session["sid"] == rec.client.get_sid()


@pytest.mark.parametrize(
    ("model", "text"),
    [
        ("double/normal", NORMAL_TEXT),
        ("double/comments", NORMAL_TEXT),
        ("double/crlf", NORMAL_TEXT),
        ("double/no_done", NORMAL_TEXT),
        ("double/split_utf8", UTF8_TEXT),
        ("double/http_429_then_ok", NORMAL_TEXT),
        ("double/http_503_then_ok", NORMAL_TEXT),
    ],
)
async def test_stream_relays_upstream_text_exactly(
    server: RunningServer,
    recorders: Callable[[], Recorder],
    upstream: UpstreamDouble,
    model: str,
    text: str,
) -> None:
    rec = await connected(server, recorders)
    ack = await rec.call("chat", {"request_id": "r1", "messages": USER_MSG, "model": model})
    assert ack == {"ok": True, "request_id": "r1"}
    event, done = await rec.terminal("r1")
    assert event == "done", done
    assert_clean_stream(rec, "r1")
    assert rec.text("r1") == text
    assert done["finish_reason"] == "stop"
    assert done["usage"]["total_tokens"] > 0
    assert done["model"] == model
    sent = "".join(r.sent_text for r in upstream.requests if r.completed)
    assert sent == text


@pytest.mark.parametrize(
    ("model", "code", "retryable"),
    [
        ("double/http_400", "upstream_bad_request", False),
        ("double/http_401", "upstream_auth", False),
        ("double/http_402", "insufficient_credits", False),
        ("double/http_403", "moderation", False),
        ("double/http_408", "upstream_timeout", True),
        ("double/http_429", "upstream_rate_limited", True),
        ("double/http_429_no_retry_after", "upstream_rate_limited", True),
        ("double/http_502", "upstream_unavailable", True),
        ("double/http_503", "upstream_unavailable", True),
        ("double/mid_stream_error", "upstream_error", True),
        ("double/truncated", "upstream_error", True),
        ("double/eof_no_finish", "upstream_error", True),
        ("double/malformed", "upstream_error", True),
    ],
)
async def test_upstream_failures_end_with_one_error(
    upstream: UpstreamDouble,
    settings_for: Callable[..., object],
    recorders: Callable[[], Recorder],
    model: str,
    code: str,
    retryable: bool,
) -> None:
    from tests.harness import run_server

    settings = settings_for(upstream_max_retries=1)
    async with run_server(settings) as srv:  # type: ignore[arg-type]
        rec = await connected(srv, recorders)
        ack = await rec.call("chat", {"request_id": "r1", "messages": USER_MSG, "model": model})
        assert ack == {"ok": True, "request_id": "r1"}
        event, error = await rec.terminal("r1", timeout=15)
        assert event == "error", error
        assert error["code"] == code
        assert error["retryable"] is retryable
        if code == "upstream_rate_limited":
            assert error["retry_after"] > 0
        assert_clean_stream(rec, "r1")
        if model in ("double/mid_stream_error", "double/truncated", "double/malformed"):
            assert rec.text("r1") == PARTIAL_SENT
        await rec.close()


async def test_hang_before_headers_is_upstream_timeout(
    upstream: UpstreamDouble,
    settings_for: Callable[..., object],
    recorders: Callable[[], Recorder],
) -> None:
    from tests.harness import run_server

    async with run_server(settings_for(upstream_first_token_timeout_s=0.5)) as srv:  # type: ignore[arg-type]
        rec = await connected(srv, recorders)
        await rec.call("chat", {"request_id": "h", "messages": USER_MSG, "model": "double/hang"})
        event, error = await rec.terminal("h")
        assert (event, error["code"], error["retryable"]) == ("error", "upstream_timeout", True)
        await rec.close()


async def test_cancel_ends_with_cancelled_and_closes_upstream(
    server: RunningServer, recorders: Callable[[], Recorder], upstream: UpstreamDouble
) -> None:
    rec = await connected(server, recorders)
    await rec.call("chat", {"request_id": "c1", "messages": USER_MSG, "model": "double/slow"})
    await rec.wait_for(lambda e, d: e == "token" and d["request_id"] == "c1")
    recorded = upstream.requests[-1]
    assert await rec.call("cancel", {"request_id": "c1"}) == {"ok": True}
    assert await upstream.wait_closed(recorded, timeout=1) < 1
    assert recorded.closed_by_client
    event, done = await rec.terminal("c1")
    assert event == "done"
    assert done["finish_reason"] == "cancelled"
    assert_clean_stream(rec, "c1")
    again = await rec.call("cancel", {"request_id": "c1"})
    assert again["ok"] is False
    assert again["error"]["code"] == "not_found"


async def test_disconnect_closes_every_upstream_of_the_connection(
    server: RunningServer, recorders: Callable[[], Recorder], upstream: UpstreamDouble
) -> None:
    rec = await connected(server, recorders)
    for rid in ("d1", "d2"):
        await rec.call("chat", {"request_id": rid, "messages": USER_MSG, "model": "double/slow"})
    await upstream.wait_for_request(2)
    await rec.wait_for(lambda e, d: e == "token" and d["request_id"] == "d2")
    await rec.leave()
    for recorded in upstream.requests:
        await upstream.wait_closed(recorded, timeout=1)
        assert recorded.closed_by_client


async def test_lost_transport_keeps_streams_for_the_grace_period(
    upstream: UpstreamDouble,
    settings_for: Callable[..., object],
    recorders: Callable[[], Recorder],
) -> None:
    from tests.harness import run_server

    async with run_server(settings_for(resume_grace_s=0.6)) as srv:  # type: ignore[arg-type]
        rec = await connected(srv, recorders)
        await rec.call("chat", {"request_id": "g1", "messages": USER_MSG, "model": "double/slow"})
        await rec.wait_for(lambda e, d: e == "token" and d["request_id"] == "g1")
        recorded = upstream.requests[-1]
        await rec.drop()
        await asyncio.sleep(0.3)
        assert recorded.closed_at is None, "closed before the grace period ended"
        waited = await upstream.wait_closed(recorded, timeout=3)
        assert recorded.closed_by_client
        assert waited < 2


async def test_concurrent_requests_and_stream_limit(
    upstream: UpstreamDouble,
    settings_for: Callable[..., object],
    recorders: Callable[[], Recorder],
) -> None:
    from tests.harness import run_server

    async with run_server(settings_for(max_streams_per_connection=2)) as srv:  # type: ignore[arg-type]
        rec = await connected(srv, recorders)
        acks = await asyncio.gather(
            *(
                rec.call(
                    "chat", {"request_id": f"p{i}", "messages": USER_MSG, "model": "double/slow"}
                )
                for i in range(3)
            )
        )
        refused = [a for a in acks if not a["ok"]]
        assert len(refused) == 1
        assert refused[0]["error"]["code"] == "too_many_streams"
        assert refused[0]["error"]["retryable"] is True
        for ack in acks:
            if ack["ok"]:
                await rec.call("cancel", {"request_id": ack["request_id"]})
                assert (await rec.terminal(ack["request_id"]))[0] == "done"
        await rec.close()


async def test_request_id_in_flight_is_refused_but_other_user_may_use_it(
    server: RunningServer, recorders: Callable[[], Recorder]
) -> None:
    alice = await connected(server, recorders)
    bob = recorders()
    await bob.connect(server.url, make_token("bob"))
    chat = {"request_id": "same", "messages": USER_MSG, "model": "double/slow"}
    assert (await alice.call("chat", chat))["ok"] is True
    dup = await alice.call("chat", chat)
    assert dup["error"]["code"] == "invalid_payload"
    assert (await bob.call("chat", chat))["ok"] is True
    # bob cannot cancel alice's request, only his own
    assert (await bob.call("cancel", {"request_id": "same"}))["ok"] is True
    assert (await bob.terminal("same"))[1]["finish_reason"] == "cancelled"
    alice_events = [e for e, _ in alice.of("same")]
    assert "done" not in alice_events
    await alice.call("cancel", {"request_id": "same"})
    await alice.terminal("same")


async def test_upstream_receives_only_known_fields(
    server: RunningServer, recorders: Callable[[], Recorder], upstream: UpstreamDouble
) -> None:
    rec = await connected(server, recorders)
    payload = {
        "request_id": "f1",
        "messages": [{"role": "user", "content": "hi", "name": "al"}],
        "model": "double/normal",
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 20,
        "stop": ["x"],
        "seed": 7,
    }
    await rec.call("chat", payload)
    await rec.terminal("f1")
    body = upstream.requests[-1].body
    assert "request_id" not in body
    assert "room" not in body
    assert body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": "hi", "name": "al"}]
    assert {k: body[k] for k in ("temperature", "top_p", "max_tokens", "stop", "seed")} == {
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 20,
        "stop": ["x"],
        "seed": 7,
    }
    headers = upstream.requests[-1].headers
    assert headers["authorization"].startswith("Bearer sk-or-test-key")
    assert headers["x-title"]
    assert headers["http-referer"]
