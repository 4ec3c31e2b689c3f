"""Fault 4: a lone surrogate ("\\ud800") in a chat is refused, size checks included,
and never reaches the room history."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import Recorder, run_server
from tests.integration.resume_helpers import connect

pytestmark = pytest.mark.chaos("4 lone surrogates")

LONE = "\ud800"


def room_chat(request_id: str, content: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "room": "lobby",
        "messages": [{"role": "user", "content": content}],
        "model": "double/normal",
    }


async def test_a_lone_surrogate_is_invalid_payload_and_the_room_stays_clean(
    settings_for: Callable[..., Any], recorders: Callable[[], Recorder]
) -> None:
    async with run_server(settings_for(max_payload_bytes=2000)) as srv:
        alice = await connect(srv.url, recorders())
        assert (await alice.call("join", {"room": "lobby"}))["ok"] is True
        ack = await alice.call("chat", room_chat("s1", f"hi {LONE} there"))
        assert ack["ok"] is False, "lost: a lone surrogate was accepted"
        assert ack["error"]["code"] == "invalid_payload", f"lost: answered {ack['error']}"
        # over the size limit and holding a surrogate: the size check is never skipped
        big = await alice.call("chat", room_chat("s2", LONE + "x" * 5000))
        assert big["ok"] is False, "lost: an oversized payload skipped the size check"
        assert big["error"]["code"] in ("invalid_payload", "payload_too_large"), big
        # the connection and the room still work, and the history holds no surrogate
        assert (await alice.call("chat", room_chat("s3", "hello")))["ok"] is True
        event, _done = await alice.terminal("s3", timeout=20)
        assert event == "done", f"lost: the room's next chat failed: {_done}"
        bob = await connect(srv.url, recorders(), "bob")
        joined = await bob.call("join", {"room": "lobby"})
        assert joined["ok"] is True, f"lost: joining the room failed: {joined}"
        history = repr(joined.get("history", joined))
        assert "\\ud800" not in history, "lost: the room history holds the surrogate"
        refused = ("invalid_payload", "payload_too_large")
        errors = [d for e, d in alice.events if e == "error" and d["code"] not in refused]
        assert not errors, f"lost: an error event reached the room: {errors}"
