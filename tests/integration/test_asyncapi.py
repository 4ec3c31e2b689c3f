"""``/asyncapi.json``, ``/docs/events`` and ``/docs``: the event API document and pages.

The document is validated against the official AsyncAPI 3.0.0 JSON schema, shipped by
the npm package ``@asyncapi/specs`` (package.json devDependencies; ``npm ci``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
from pydantic import Field

from events.core.asyncapi import asyncapi_document
from events.core.catalog import CORE_EVENTS, EventDoc
from events.core.errors import DESCRIPTIONS, RETRYABLE, ErrorCode
from events.core.models import ChatRequest
from tests.harness import RunningServer

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0-without-$id.json"

PROTOCOL_CLIENT_EVENTS = {"chat", "cancel", "join", "leave", "resume", "refresh"}
PROTOCOL_SERVER_EVENTS = {
    "session",
    "token",
    "reasoning",
    "tool_call",
    "done",
    "error",
    "message",
    "presence",
}
RAW_CLIENT_FRAMES = {"chat", "cancel", "resume", "refresh"}  # events/transport/websocket.py
RAW_SERVER_FRAMES = {"token", "reasoning", "tool_call", "done", "error", "completion", "refreshed"}


async def get(srv: RunningServer, path: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, http.get(srv.url + path) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


def asyncapi_validator() -> jsonschema.Draft7Validator:
    assert SPEC.is_file(), f"{SPEC} is missing: run `npm ci` (package.json devDependencies)"
    schema = json.loads(SPEC.read_text())
    assert "AsyncAPI 3.0.0" in schema["title"]
    return jsonschema.Draft7Validator(schema)


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def payload_validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Validator:
    """A validator for one payload schema whose refs point into ``doc``'s components."""
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


async def test_document_is_valid_asyncapi_3_and_covers_every_event(server: RunningServer) -> None:
    status, content_type, text = await get(server, "/asyncapi.json")
    assert status == 200
    assert content_type.startswith("application/json")
    doc = json.loads(text)
    errors = sorted(asyncapi_validator().iter_errors(doc), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]
    for ref in refs(doc):
        resolve(doc, ref)  # every reference points at something

    assert doc["asyncapi"] == "3.0.0"
    assert doc["servers"]["socketio"]["host"] == f"127.0.0.1:{server.port}"
    assert doc["servers"]["socketio"]["pathname"] == "/socket.io/"

    messages = doc["channels"]["socketio"]["messages"]
    ops = doc["operations"]
    received = {op["title"] for op in ops.values() if op["action"] == "receive"}
    sent = {
        op["title"]
        for op in ops.values()
        if op["action"] == "send" and op["channel"]["$ref"].endswith("/socketio")
    }
    # every handler registered on the server is documented, and so is the protocol's table
    handlers = set(server.app.runtime.sio.handlers["/"]) - {"connect", "disconnect"}
    assert handlers <= received, handlers - received
    assert received >= PROTOCOL_CLIENT_EVENTS
    assert sent >= PROTOCOL_SERVER_EVENTS
    for name in PROTOCOL_CLIENT_EVENTS:
        assert f"{name}_ack" in messages
        for shape in messages[f"{name}_ack"]["payload"]["oneOf"]:
            assert "ok" in resolve(doc, shape["$ref"])["required"]
        assert ops[f"receive_{name}"]["reply"]["messages"]
    raw = doc["channels"]["websocket"]["messages"]
    assert set(raw) == RAW_CLIENT_FRAMES | RAW_SERVER_FRAMES

    # the auth scheme
    schemes = doc["components"]["securitySchemes"]
    assert schemes["jwt"]["scheme"] == "bearer"
    assert "auth: {token}" in schemes["jwt"]["description"]
    assert schemes["jwtQuery"]["in"] == "query"
    assert doc["servers"]["socketio"]["security"] == [{"$ref": "#/components/securitySchemes/jwt"}]

    # every error code, with its meaning and retryability
    codes = {c["const"]: c for c in doc["components"]["schemas"]["ErrorCode"]["oneOf"]}
    assert set(codes) == {code.value for code in ErrorCode}
    for code in ErrorCode:
        assert codes[code.value]["description"] == DESCRIPTIONS[code]
        assert codes[code.value]["x-retryable"] is (code in RETRYABLE)
    assert doc["components"]["schemas"]["ErrorObject"]["properties"]["code"] == {
        "$ref": "#/components/schemas/ErrorCode"
    }


async def test_payload_schemas_are_the_models_and_examples_are_valid(
    server: RunningServer,
) -> None:
    doc = json.loads((await get(server, "/asyncapi.json"))[2])
    schemas = doc["components"]["schemas"]
    messages = doc["channels"]["socketio"]["messages"]
    for event in CORE_EVENTS:
        if not event.socketio:
            continue
        message = messages[event.name]
        name = message["payload"]["$ref"].rsplit("/", 1)[-1]
        assert name == event.payload.__name__
        assert set(schemas[name]["properties"]) == set(event.payload.model_fields)
        assert set(schemas[name].get("required", [])) == {
            field for field, info in event.payload.model_fields.items() if info.is_required()
        }
        assert message["examples"], event.name
        validator = payload_validator(doc, message["payload"])
        for example in message["examples"]:
            event.payload.model_validate(example["payload"])
            validator.validate(example["payload"])
    for name, message in doc["channels"]["websocket"]["messages"].items():
        validator = payload_validator(doc, message["payload"])
        for example in message.get("examples", []):
            validator.validate(example["payload"])
            assert example["payload"].get("type", "chat") == name


def test_a_field_added_to_a_model_appears_in_the_document() -> None:
    class ChatRequestPlus(ChatRequest):
        """``chat`` with one more field."""

        reasoning_effort: str | None = Field(None, max_length=10)

    events = [
        EventDoc(e.name, e.sender, ChatRequestPlus, e.summary, acks=e.acks, raw_frame=True)
        if e.name == "chat"
        else e
        for e in CORE_EVENTS
    ]
    doc = asyncapi_document(events, title="t", version="1")
    assert "reasoning_effort" in doc["components"]["schemas"]["ChatRequestPlus"]["properties"]
    assert "reasoning_effort" in doc["components"]["schemas"]["ChatRequestPlusFrame"]["properties"]
    assert "ChatRequest" not in doc["components"]["schemas"]


async def test_event_docs_page_is_rendered_from_the_document(server: RunningServer) -> None:
    status, content_type, page = await get(server, "/docs/events")
    assert status == 200
    assert content_type.startswith("text/html")
    for name in PROTOCOL_CLIENT_EVENTS | PROTOCOL_SERVER_EVENTS | RAW_SERVER_FRAMES:
        assert f"<code>{name}</code>" in page, name
    for code in ErrorCode:
        assert f"id='code-{code.value}'" in page
        assert DESCRIPTIONS[code].replace("'", "&#x27;") in page
    for field in ChatRequest.model_fields:
        assert f"<code>{field}</code>" in page
    assert "auth: {token}" in page
    # self-contained: no scripts, nothing loaded from elsewhere
    assert "<script" not in page
    assert "src=" not in page
    assert "https://" not in page


async def test_openapi_covers_http_routes_and_links_the_event_docs(server: RunningServer) -> None:
    status, _, text = await get(server, "/openapi.json")
    assert status == 200
    spec = json.loads(text)
    assert "/docs/events" in spec["info"]["description"]
    assert "/asyncapi.json" in spec["info"]["description"]
    for path in ("/health", "/health/ready", "/auth/token", "/metrics", "/asyncapi.json"):
        assert path in spec["paths"], path
    token = spec["components"]["schemas"]["TokenResponse"]
    assert token.get("examples"), token
    liveness = spec["components"]["schemas"]["Liveness"]
    assert liveness.get("examples"), liveness
    status, content_type, _ = await get(server, "/docs")
    assert status == 200
    assert "text/html" in content_type
