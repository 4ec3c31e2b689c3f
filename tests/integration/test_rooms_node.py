"""Rooms with the official JavaScript ``socket.io-client`` (Node), over both transports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import Recorder, RunningServer, assert_clean_stream, make_token
from tests.integration.test_node_socketio_client import ROOT, run_probe
from tests.integration.test_rooms import member, say, wait_presence
from tests.upstream_scenarios import NORMAL_TEXT

pytestmark = pytest.mark.node

PROBE = ROOT / "tests" / "node" / "room_probe.mjs"


async def run_room_probe(options: dict[str, Any]) -> list[tuple[str, Any]]:
    return await run_probe(options, PROBE)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_node_client_chats_in_a_room(
    server: RunningServer, recorders: Callable[[], Recorder], transport: str
) -> None:
    bob = await member(server.url, recorders, "bob")
    await bob.call("join", {"room": "lobby"})
    events = await run_room_probe(
        {
            "url": server.url,
            "token": make_token("alice", name="Alice"),
            "room": "lobby",
            "chat": say("Hello from Node", "lobby", "n1"),
            "until": "n1",
            "transports": [transport],
        }
    )
    ack = next(d for e, d in events if e == "join_ack")
    assert ack["ok"] is True
    assert ack["members"] == [{"id": "bob", "name": "Bob"}, {"id": "alice", "name": "Alice"}]
    assert next(d for e, d in events if e == "chat_ack") == {"ok": True, "request_id": "n1"}
    message = next(d for e, d in events if e == "message")
    assert (message["user"]["id"], message["content"]) == ("alice", "Hello from Node")
    node_text = "".join(d["content"] for e, d in events if e == "token")
    assert node_text == NORMAL_TEXT
    assert [e for e, _ in events if e in ("done", "error")] == ["done"]
    # bob, a python-socketio client in the same room, got the same stream
    assert (await bob.terminal("n1"))[0] == "done"
    assert_clean_stream(bob, "n1")
    assert bob.text("n1") == NORMAL_TEXT
    await wait_presence(bob, "lobby", ["bob"])  # the Node client left by disconnecting
