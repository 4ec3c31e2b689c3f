"""Logs: one lifecycle line per request, request ids carried through, no secrets anywhere.

The server runs with uvicorn's access log on, and logging set up by the same
``configure_logging`` that ``python -m server`` uses, writing to a buffer.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from server.logs import configure_logging
from tests.harness import API_KEY, JWT_SECRET, Recorder, RunningServer, make_token, run_server

USER_MSG = [{"role": "user", "content": "Say hello"}]
LIFECYCLE_FIELDS = {
    "request_id",
    "user_id",
    "transport",
    "model",
    "outcome",
    "code",
    "finish_reason",
    "tokens",
    "accepted_at",
    "first_token_s",
    "duration_s",
}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


async def run_chats(srv: RunningServer, recorders: Callable[[], Recorder]) -> list[str]:
    """ok, cancelled, upstream error, rejected; a raw WebSocket chat; HTTP with tokens."""
    alice_token = make_token("alice", name="Alice")
    rec = recorders()
    await rec.connect(srv.url, alice_token)
    assert (await rec.call("chat", {"request_id": "ok", "messages": USER_MSG}))["ok"]
    assert (await rec.terminal("ok"))[0] == "done"
    slow = {"request_id": "slow", "messages": USER_MSG, "model": "double/slow"}
    assert (await rec.call("chat", slow))["ok"]
    await rec.wait_for(lambda e, d: e == "token" and d["request_id"] == "slow")
    await rec.call("cancel", {"request_id": "slow"})
    await rec.terminal("slow")
    bad = {"request_id": "bad", "messages": USER_MSG, "model": "double/http_502"}
    assert (await rec.call("chat", bad))["ok"]
    await rec.terminal("bad", timeout=15)
    refused = await rec.call("chat", {"request_id": "inv", "messages": "nope"})
    assert refused["error"]["code"] == "invalid_payload"

    bob_token = make_token("bob", name="Bob")
    async with aiohttp.ClientSession() as http:
        url = f"{srv.ws_url}/websockets/openrouter?token={bob_token}"
        async with http.ws_connect(url) as ws:
            await ws.send_json({"request_id": "raw", "messages": USER_MSG})
            while (await ws.receive_json(timeout=10))["type"] != "done":
                pass
        async with http.get(f"{srv.url}/health?token={alice_token}&x=1") as resp:
            assert resp.status == 200
        async with http.get(f"{srv.url}/health", params={"access_token": bob_token}) as resp:
            assert resp.status == 200
    return [alice_token, bob_token]


def assert_no_secret(output: str, tokens: list[str]) -> None:
    for secret in [API_KEY, JWT_SECRET, *tokens]:
        assert secret not in output
    # the JWTs' signatures (the part that matters) appear nowhere, not even split
    for token in tokens:
        assert token.rsplit(".", 1)[1] not in output


@pytest.mark.usefixtures("restore_logging")
async def test_json_logs_have_one_lifecycle_line_per_request_and_no_secret(
    settings_for: Callable[..., Any], recorders: Callable[[], Recorder]
) -> None:
    settings = settings_for(upstream_max_retries=1, log_format="json")
    buffer = io.StringIO()
    configure_logging("debug", "json", secrets=settings.secret_values(), stream=buffer)
    async with run_server(settings, access_log=True) as srv:
        tokens = await run_chats(srv, recorders)
    output = buffer.getvalue()
    records = [json.loads(line) for line in output.splitlines()]  # every line is JSON
    assert_no_secret(output, tokens)

    lifecycle = [r for r in records if r.get("event") == "request"]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for record in lifecycle:
        by_id.setdefault(record["request_id"], []).append(record)
    assert set(by_id) == {"ok", "slow", "bad", "inv", "raw"}
    assert all(len(lines) == 1 for lines in by_id.values()), by_id
    line = {rid: lines[0] for rid, lines in by_id.items()}
    for rid in ("ok", "slow", "bad", "raw"):
        assert set(line[rid]) >= LIFECYCLE_FIELDS, line[rid]
        assert line[rid]["level"] == "info"
        assert line[rid]["duration_s"] >= 0
    assert line["ok"]["outcome"] == "done"
    assert line["ok"]["finish_reason"] == "stop"
    assert line["ok"]["user_id"] == "alice"
    assert line["ok"]["transport"] == "socketio"
    assert line["ok"]["model"] == "openrouter/auto"
    assert line["ok"]["tokens"] > 0
    assert line["ok"]["completion_tokens"] > 0
    assert 0 <= line["ok"]["first_token_s"] <= line["ok"]["duration_s"]
    assert line["slow"]["outcome"] == "cancelled"
    assert line["slow"]["stop_reason"] == "cancel"
    assert (line["bad"]["outcome"], line["bad"]["code"]) == ("error", "upstream_unavailable")
    assert line["bad"]["first_token_s"] is None
    assert line["bad"]["tokens"] == 0
    assert (line["inv"]["outcome"], line["inv"]["code"]) == ("rejected", "invalid_payload")
    assert (line["raw"]["transport"], line["raw"]["user_id"]) == ("websocket", "bob")

    # request ids carried through: the upstream client's lines name their request
    upstream = [r for r in records if r["logger"] == "services.upstream.client"]
    assert {r.get("request_id") for r in upstream} >= {"ok", "bad"}
    retry = [r for r in upstream if r["msg"].startswith("upstream retry")]
    assert [(r["request_id"], r["user_id"]) for r in retry] == [("bad", "alice")]

    # uvicorn's access log went through the same redaction
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    health = [r["msg"] for r in access if "/health" in r["msg"]]
    assert len(health) == 2
    assert any("token=[REDACTED]&x=1" in msg for msg in health), health
    assert any("access_token=[REDACTED]" in msg for msg in health), health
    ws_lines = [r["msg"] for r in records if "/websockets/openrouter" in r["msg"]]
    assert ws_lines
    assert all("token=[REDACTED]" in msg for msg in ws_lines), ws_lines


@pytest.mark.usefixtures("restore_logging")
async def test_text_logs_carry_the_same_fields_and_no_secret(
    settings_for: Callable[..., Any], recorders: Callable[[], Recorder]
) -> None:
    settings = settings_for(upstream_max_retries=1)
    buffer = io.StringIO()
    configure_logging("info", "text", secrets=settings.secret_values(), stream=buffer)
    async with run_server(settings, access_log=True) as srv:
        tokens = await run_chats(srv, recorders)
    output = buffer.getvalue()
    assert_no_secret(output, tokens)
    lines = output.splitlines()
    for rid, outcome in [("ok", "done"), ("slow", "cancelled"), ("bad", "error"), ("raw", "done")]:
        found = [
            line for line in lines if f" request_id={rid} " in line and " event=request " in line
        ]
        assert len(found) == 1, found
        assert f" outcome={outcome} " in found[0]
        for field in ("user_id", "transport", "model", "tokens", "duration_s", "accepted_at"):
            assert f" {field}=" in found[0]
    access = [line for line in lines if "uvicorn.access" in line and "/health" in line]
    assert len(access) == 2
    assert all("token=[REDACTED]" in line for line in access), access
    assert any('"WebSocket /websockets/openrouter?token=[REDACTED]"' in line for line in lines)


def test_exceptions_and_extra_fields_are_redacted(restore_logging: None) -> None:
    buffer = io.StringIO()
    configure_logging("info", "json", secrets=("my-api-key-1234",), stream=buffer)
    log = logging.getLogger("tests.redaction")
    try:
        raise RuntimeError("failed calling https://x/?token=abcdef with my-api-key-1234")
    except RuntimeError:
        log.exception("boom", extra={"url": "/ws?token=abcdef", "auth": "Bearer abc.def.ghi"})
    record = json.loads(buffer.getvalue())
    text = json.dumps(record)
    assert "abcdef" not in text
    assert "my-api-key-1234" not in text
    assert "abc.def.ghi" not in text
    assert record["url"] == "/ws?token=[REDACTED]"
    assert "RuntimeError" in record["exc"]
