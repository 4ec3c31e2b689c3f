"""The example extension (examples/echo_extension.py): its event, its route, its docs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from examples.echo_extension import echo_extension
from server.app import create_app
from server.extensions import Extension
from tests.harness import Recorder, make_token, run_server
from tests.integration.test_asyncapi import asyncapi_validator, get, payload_validator


async def test_echo_event_acks_emits_and_refuses(
    settings_for: Callable[..., Any], recorders: Callable[[], Recorder]
) -> None:
    settings = settings_for(allow_anonymous=True)
    async with run_server(settings, extensions=[echo_extension()]) as srv:
        rec = recorders()
        await rec.connect(srv.url, make_token("alice", name="Alice"))
        ack = await rec.call("echo", {"text": "hello", "times": 2})
        assert ack == {"ok": True, "text": "hello", "user": {"id": "alice", "name": "Alice"}}
        await rec.wait_for(lambda e, d: e == "echoed" and d["n"] == 1)
        assert [d for e, d in rec.events if e == "echoed"] == [
            {"text": "hello", "n": 0},
            {"text": "hello", "n": 1},
        ]
        # the payload model validates before the handler runs
        bad = await rec.call("echo", {"text": "", "loud": True})
        assert bad["ok"] is False
        assert bad["error"]["code"] == "invalid_payload"
        assert {d["field"] for d in bad["error"]["details"]} == {"text", "loud"}
        assert (await rec.call("echo", "not an object"))["error"]["code"] == "invalid_payload"
        # the handler's own error code
        guest = recorders()
        await guest.connect(srv.url)
        refused = await guest.call("echo", {"text": "hi"})
        assert refused["ok"] is False
        assert refused["error"]["code"] == "forbidden"
        assert refused["error"]["retryable"] is False
        # the connection stays usable, and core events still work next to the extension's
        ack = await guest.call(
            "chat", {"request_id": "c1", "messages": [{"role": "user", "content": "x"}]}
        )
        assert ack == {"ok": True, "request_id": "c1"}
        assert (await guest.terminal("c1"))[0] == "done"

        # the HTTP route
        status, _, body = await get(srv, "/echo?text=hi")
        assert (status, json.loads(body)) == (200, {"text": "hi"})
        assert (await get(srv, "/echo?text="))[0] == 422


async def test_echo_appears_in_asyncapi_docs_and_openapi(settings_for: Callable[..., Any]) -> None:
    async with run_server(settings_for(), extensions=[echo_extension()]) as srv:
        doc = json.loads((await get(srv, "/asyncapi.json"))[2])
        assert not list(asyncapi_validator().iter_errors(doc))
        messages = doc["channels"]["socketio"]["messages"]
        assert messages["echo"]["payload"] == {"$ref": "#/components/schemas/EchoRequest"}
        assert messages["echoed"]["payload"] == {"$ref": "#/components/schemas/EchoedEvent"}
        assert {"echo_ack"} <= set(messages)
        assert doc["operations"]["receive_echo"]["x-error-codes"] == [
            "invalid_payload",
            "forbidden",
        ]
        assert doc["operations"]["send_echoed"]["action"] == "send"
        schema = doc["components"]["schemas"]["EchoRequest"]
        assert set(schema["properties"]) == {"text", "times"}
        assert schema["properties"]["text"]["maxLength"] == 1000
        payload_validator(doc, messages["echo"]["payload"]).validate({"text": "hello", "times": 2})
        assert srv.app.runtime.sio.handlers["/"]["echo"]

        page = (await get(srv, "/docs/events"))[2]
        assert "<code>echo</code>" in page
        assert "<code>echoed</code>" in page
        openapi = json.loads((await get(srv, "/openapi.json"))[2])
        assert "/echo" in openapi["paths"]


async def test_without_the_extension_there_is_no_echo(settings_for: Callable[..., Any]) -> None:
    async with run_server(settings_for()) as srv:
        doc = json.loads((await get(srv, "/asyncapi.json"))[2])
        assert "echo" not in doc["channels"]["socketio"]["messages"]
        assert "echo" not in srv.app.runtime.sio.handlers["/"]
        assert (await get(srv, "/echo?text=hi"))[0] == 404


def test_an_extension_cannot_take_a_core_event_name(settings_for: Callable[..., Any]) -> None:
    spec = echo_extension().events[0]
    clash = Extension("clash", events=[dataclasses.replace(spec, name="chat")])
    with pytest.raises(ValueError, match="chat"):
        create_app(settings_for(), extensions=[clash])
