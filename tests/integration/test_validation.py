"""Bad `chat` payloads get a clear error; the same connection then completes a chat."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import Recorder, RunningServer, assert_clean_stream, make_token

GOOD = {"messages": [{"role": "user", "content": "hi"}], "model": "double/normal"}
MSG = {"role": "user", "content": "x"}

CASES: list[tuple[str, Any, str, str | None]] = [
    ("non-object", "hello", "invalid_payload", None),
    ("list", [1, 2], "invalid_payload", None),
    ("missing messages", {"model": "double/normal"}, "invalid_payload", "messages"),
    ("empty messages", {"messages": []}, "invalid_payload", "messages"),
    (
        "bad role",
        {"messages": [{"role": "wizard", "content": "x"}]},
        "invalid_payload",
        "messages.0.role",
    ),
    ("temperature 5", {"messages": [MSG], "temperature": 5}, "invalid_payload", "temperature"),
    ("unknown field", {"messages": [MSG], "frobnicate": 1}, "invalid_payload", "frobnicate"),
    ("n", {"messages": [MSG], "n": 2}, "invalid_payload", "n"),
    ("user", {"messages": [MSG], "user": "someone"}, "invalid_payload", "user"),
    ("unknown message field", {"messages": [{**MSG, "x": 1}]}, "invalid_payload", "messages.0.x"),
    (
        "string temperature",
        {"messages": [MSG], "temperature": "1"},
        "invalid_payload",
        "temperature",
    ),
    (
        "content number",
        {"messages": [{"role": "user", "content": 5}]},
        "invalid_payload",
        "messages.0.content",
    ),
    (
        "bad request_id",
        {"messages": [MSG], "request_id": "has space"},
        "invalid_payload",
        "request_id",
    ),
    ("empty room", {"messages": [MSG], "room": ""}, "invalid_payload", "room"),
    # A lone surrogate decodes in Python but cannot be measured as UTF-8: refused, never
    # let through with its size check skipped.
    (
        "lone surrogate",
        {"messages": [{"role": "user", "content": "\ud800" + "x" * 2_000_000}]},
        "invalid_payload",
        None,
    ),
    ("10,000 messages", {"messages": [MSG] * 10_000}, "payload_too_large", None),
    (
        "2 MB message",
        {"messages": [{"role": "user", "content": "x" * 2_000_000}]},
        "payload_too_large",
        None,
    ),
]


@pytest.mark.parametrize(("name", "payload", "code", "field"), CASES, ids=[c[0] for c in CASES])
async def test_invalid_chat_is_refused_and_connection_keeps_working(
    server: RunningServer,
    recorders: Callable[[], Recorder],
    name: str,
    payload: Any,
    code: str,
    field: str | None,
) -> None:
    rec = recorders()
    await rec.connect(server.url, make_token("alice"))
    ack = await rec.call("chat", payload)
    assert ack["ok"] is False
    assert ack["error"]["code"] == code
    assert ack["error"]["retryable"] is False
    if field is not None:
        assert field in [d["field"] for d in ack["error"]["details"]], ack
    event = await rec.wait_event("error")
    assert event["code"] == code
    ok = await rec.call("chat", {**GOOD, "request_id": "after"})
    assert ok == {"ok": True, "request_id": "after"}
    assert (await rec.terminal("after"))[0] == "done"
    assert_clean_stream(rec, "after")


async def test_refusal_event_names_the_request_id(
    server: RunningServer, recorders: Callable[[], Recorder]
) -> None:
    rec = recorders()
    await rec.connect(server.url, make_token("alice"))
    await rec.call("chat", {"request_id": "bad-1", "messages": []})
    event = await rec.wait_event("error")
    assert event["request_id"] == "bad-1"
    assert event["code"] == "invalid_payload"


async def test_model_allowlist(
    settings_for: Callable[..., Any], recorders: Callable[[], Recorder]
) -> None:
    from tests.harness import run_server

    allowed = settings_for(
        allowed_models="double/normal,double/slow", default_model="double/normal"
    )
    async with run_server(allowed) as srv:
        rec = recorders()
        await rec.connect(srv.url, make_token("alice"))
        refused = await rec.call("chat", {"messages": [MSG], "model": "openai/gpt-4o"})
        assert refused["error"]["code"] == "model_not_allowed"
        fallback = await rec.call(
            "chat", {"messages": [MSG], "model": "double/normal", "models": ["other/model"]}
        )
        assert fallback["error"]["code"] == "model_not_allowed"
        ok = await rec.call("chat", {**GOOD, "request_id": "m1"})
        assert ok["ok"] is True
        await rec.terminal("m1")
        await rec.close()


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("cancel", None),
        ("cancel", {"request_id": 5}),
        ("resume", {"request_id": "x"}),
        ("resume", {"request_id": "x", "last_seq": "0"}),
        ("refresh", {}),
    ],
)
async def test_other_events_refuse_bad_payloads_in_their_ack(
    server: RunningServer, recorders: Callable[[], Recorder], event: str, payload: Any
) -> None:
    rec = recorders()
    await rec.connect(server.url, make_token("alice"))
    ack = await rec.call(event, payload)
    assert ack["ok"] is False
    assert ack["error"]["code"] == "invalid_payload"
    assert not [e for e, _ in rec.events if e == "error"]
