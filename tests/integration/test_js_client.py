"""The shared JavaScript client (web/js/relay.js) under Node, with the official
socket.io-client, against the real server: chat, cancel, rooms, resume after a drop,
token renewal on an open connection, the shared `seq` of v2 stream events."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import RunningServer, make_token
from tests.integration.test_node_socketio_client import ROOT, run_probe
from tests.upstream_double import UpstreamDouble
from tests.upstream_scenarios import (
    NORMAL_TEXT,
    PARALLEL_TOOL_CALLS,
    REASONING_TEXT,
    SLOW_TEXT,
)

pytestmark = [pytest.mark.node, pytest.mark.timeout(60)]

PROBE = ROOT / "tests" / "node" / "relay_probe.mjs"


def chat(model: str, text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def probe(options: dict[str, Any]) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    events = await run_probe(options, PROBE)
    ends = [data for name, data in events if name == "end"]
    assert len(ends) == 1, events
    return events, ends[0]


async def test_streams_an_answer_in_order(server: RunningServer) -> None:
    token = make_token("alice")
    events, end = await probe({"url": server.url, "token": token, "request": chat("double/normal")})
    assert end["event"] == "done"
    assert end["payload"]["finish_reason"] == "stop"
    assert end["text"] == NORMAL_TEXT
    assert "".join(d for name, d in events if name == "text") == NORMAL_TEXT
    assert next(d for name, d in events if name == "ack")["ok"] is True


async def test_cancel_ends_with_cancelled_and_closes_the_upstream(
    server: RunningServer, upstream: UpstreamDouble
) -> None:
    options = {
        "url": server.url,
        "token": make_token("alice"),
        "request": chat("double/slow"),
        "cancelAfterTokens": 3,
    }
    _, end = await probe(options)
    assert end["payload"]["finish_reason"] == "cancelled"
    assert SLOW_TEXT.startswith(end["text"])
    assert end["text"] != SLOW_TEXT
    rec = await upstream.wait_for_request()
    await upstream.wait_closed(rec, timeout=10)
    assert rec.closed_by_client


async def test_a_dropped_transport_is_resumed_exactly_once(server: RunningServer) -> None:
    options = {
        "url": server.url,
        "token": make_token("alice"),
        "request": chat("double/slow"),
        "dropAfterTokens": 5,
    }
    events, end = await probe(options)
    names = [name for name, _ in events]
    assert "drop" in names
    assert names.count("session") >= 1
    assert names[names.index("drop") :].count("status") >= 2  # reconnecting, connected
    assert end["event"] == "done", end
    assert end["text"] == SLOW_TEXT  # nothing lost, nothing twice
    assert end["lastSeq"] == end["payload"].get("last_seq", end["lastSeq"])


async def test_a_room_answer_and_a_refused_room(server: RunningServer) -> None:
    token = make_token("alice", name="Alice")
    options = {
        "url": server.url,
        "token": token,
        "room": "lobby",
        "request": chat("double/normal", room="lobby"),
    }
    events, end = await probe(options)
    join = next(data for name, data in events if name == "join")
    assert join["ok"] is True
    assert join["room"] == "lobby"
    assert end["text"] == NORMAL_TEXT
    assert end["payload"]["room"] == "lobby"

    options["room"] = "_reserved"
    options["request"] = chat("double/normal", room="_reserved")
    events, end = await probe(options)
    join = next(data for name, data in events if name == "join")
    assert join["ok"] is False
    assert join["error"]["code"] == "forbidden"
    assert end["event"] == "error"
    assert end["payload"]["code"] == "forbidden"


async def test_token_is_renewed_on_the_open_connection(server: RunningServer) -> None:
    options = {
        "url": server.url,
        "token": make_token("alice", ttl=4),
        "renewToken": make_token("alice", ttl=3600),
        "request": chat("double/slow"),  # 10 s: outlives the first token
    }
    events, end = await probe(options)
    names = [name for name, _ in events]
    assert "renew" in names, names
    assert "refreshed" in names, names
    assert "problem" not in names
    assert end["event"] == "done"
    assert end["text"] == SLOW_TEXT


async def test_a_refused_request_ends_the_stream_once(server: RunningServer) -> None:
    options = {
        "url": server.url,
        "token": make_token("alice"),
        "request": {"messages": [{"role": "wizard", "content": "hi"}]},
    }
    events, end = await probe(options)
    assert end["event"] == "error"
    assert end["payload"]["code"] == "invalid_payload"
    assert [name for name, _ in events].count("end") == 1


async def test_reasoning_and_tool_calls_arrive_as_typed_events_in_seq_order(
    server: RunningServer,
) -> None:
    token = make_token("alice")
    events, end = await probe(
        {"url": server.url, "token": token, "request": chat("double/reasoning")}
    )
    assert end["reasoning"] == REASONING_TEXT
    assert end["text"] == NORMAL_TEXT
    kinds = [name for name, _ in events if name in ("reasoning", "text")]
    assert kinds == sorted(kinds)  # every reasoning delta before the first text delta
    assert "".join(d for name, d in events if name == "reasoning") == REASONING_TEXT
    assert end["lastSeq"] == end["payload"]["last_seq"]

    request = chat("double/tool_calls_parallel")
    events, end = await probe({"url": server.url, "token": token, "request": request})
    assert end["payload"]["finish_reason"] == "tool_calls"
    assert end["payload"]["tool_calls"] == PARALLEL_TOOL_CALLS
    assert [
        {
            "id": c["id"],
            "type": "function",
            "function": {"name": c["name"], "arguments": c["arguments"]},
        }
        for c in end["toolCalls"]
    ] == PARALLEL_TOOL_CALLS
    assert len([name for name, _ in events if name == "tool_call"]) >= 2  # (pieces may join)
