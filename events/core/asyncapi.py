"""The AsyncAPI 3 document of the event API, generated from the catalog and its models.

One source of truth: every payload schema comes from the pydantic model that validates
(or shapes) the event, so a field added to a model appears here.  ``asyncapi_document``
builds everything but the servers' host, which ``with_servers`` fills in per request.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from events.core import models as m
from events.core.catalog import EventDoc
from events.core.errors import DESCRIPTIONS, RETRYABLE, ErrorCode

ASYNCAPI_VERSION = "3.0.0"
SCHEMAS = "#/components/schemas/"
SIO = "socketio"
RAW = "websocket"

Doc = dict[str, Any]


def check_names(events: Sequence[EventDoc]) -> None:
    """Refuse two events of one name (e.g. an extension's event named like a core one)."""
    names = [event.name for event in events]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise ValueError(f"events described twice: {sorted(duplicates)}")


def asyncapi_document(events: Sequence[EventDoc], *, title: str, version: str) -> Doc:
    check_names(events)
    schemas = _schemas(events)
    _describe_error_codes(schemas)
    for ack in {ack for event in events for ack in event.acks} | {m.ErrorAck}:
        required = schemas[ack.__name__].setdefault("required", [])
        if "ok" not in required:  # a default for building it; always on the wire
            required.insert(0, "ok")
    sio_messages: Doc = {}
    raw_messages: Doc = {}
    operations: Doc = {}
    for event in events:
        if event.socketio:
            sio_messages[event.name] = _message(event, _ref(event.payload))
            operations[_operation_id(event, SIO)] = _operation(event, SIO)
            if event.sender == "client":
                sio_messages[f"{event.name}_ack"] = _ack_message(event)
        if event.raw_frame:
            frame = _frame_schema(event, schemas)
            raw_messages[event.name] = _message(event, {"$ref": SCHEMAS + frame}, raw=True)
            operations[_operation_id(event, RAW)] = _operation(event, RAW)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:llm-relay:events",
        "info": {
            "title": f"{title} events",
            "version": version,
            "description": _INFO,
            "tags": [{"name": name, "description": text} for name, text in _TAGS.items()],
            "externalDocs": {"description": "This document as a page", "url": "/docs/events"},
        },
        "defaultContentType": "application/json",
        "channels": {
            SIO: {
                "address": "/",
                "title": "Socket.IO namespace /",
                "description": _SIO_CHANNEL,
                "servers": [{"$ref": f"#/servers/{SIO}"}],
                "messages": sio_messages,
            },
            RAW: {
                "address": "/websockets/openrouter",
                "title": "Raw WebSocket",
                "description": _RAW_CHANNEL,
                "servers": [{"$ref": f"#/servers/{RAW}"}],
                "messages": raw_messages,
            },
        },
        "operations": operations,
        "components": {
            "schemas": schemas,
            "securitySchemes": _SECURITY,
        },
    }


def with_servers(doc: Doc, host: str, *, secure: bool) -> Doc:
    """The document with servers at ``host`` (as the client reached this one)."""
    protocol = "wss" if secure else "ws"
    return {
        **doc,
        "servers": {
            SIO: {
                "host": host,
                "protocol": protocol,
                "pathname": "/socket.io/",
                "title": "Socket.IO",
                "description": "Socket.IO protocol v5 (Engine.IO v4); websocket or "
                "HTTP long-polling transport. Any Socket.IO client 4.x or python-socketio 5.x.",
                "security": [
                    {"$ref": "#/components/securitySchemes/jwt"},
                ],
            },
            RAW: {
                "host": host,
                "protocol": protocol,
                "pathname": "/websockets/openrouter",
                "title": "Raw WebSocket",
                "description": "Plain WebSocket, JSON text frames (compatibility endpoint).",
                "security": [
                    {"$ref": "#/components/securitySchemes/jwt"},
                    {"$ref": "#/components/securitySchemes/jwtQuery"},
                ],
            },
        },
    }


# -- schemas ----------------------------------------------------------------------------


def _models(events: Iterable[EventDoc]) -> list[type[BaseModel]]:
    seen: dict[type[BaseModel], None] = {}
    for event in events:
        seen[event.payload] = None
        for ack in event.acks:
            seen[ack] = None
    seen[m.ErrorAck] = None
    return list(seen)


def _schemas(events: Sequence[EventDoc]) -> Doc:
    _, top = models_json_schema(
        [(model, "validation") for model in _models(events)],
        ref_template=SCHEMAS + "{model}",
    )
    schemas: Doc = top.get("$defs", {})
    _plain_discriminators(schemas)
    return schemas


def _plain_discriminators(node: Any) -> None:
    """OpenAPI's ``discriminator`` object (pydantic's, on a ``oneOf``) is not AsyncAPI's
    (a property name on the parent schema): keep the ``oneOf`` alone, whose members'
    ``const`` tags say the same."""
    if isinstance(node, dict):
        if isinstance(node.get("discriminator"), dict) and "oneOf" in node:
            del node["discriminator"]
        for value in node.values():
            _plain_discriminators(value)
    elif isinstance(node, list):
        for value in node:
            _plain_discriminators(value)


def _ref(model: type[BaseModel]) -> Doc:
    return {"$ref": SCHEMAS + model.__name__}


def _describe_error_codes(schemas: Doc) -> None:
    """The ``ErrorCode`` schema lists every code with its meaning and whether to retry."""
    schemas["ErrorCode"] = {
        "title": "ErrorCode",
        "type": "string",
        "description": "The one table of error codes. `retryable` in an error object tells "
        "whether the same request may succeed later.",
        "enum": [code.value for code in ErrorCode],
        "oneOf": [
            {
                "const": code.value,
                "title": code.value,
                "description": DESCRIPTIONS[code],
                "x-retryable": code in RETRYABLE,
            }
            for code in ErrorCode
        ],
    }


def _frame_schema(event: EventDoc, schemas: Doc) -> str:
    """The raw WebSocket frame of an event: its payload schema plus ``type``."""
    name = event.payload.__name__
    if "type" in schemas[name].get("properties", {}):
        return name  # a raw-only frame model already has its type
    frame_name = f"{name}Frame"
    if frame_name in schemas:
        return frame_name
    frame = copy.deepcopy(schemas[name])
    frame["title"] = frame_name
    properties = frame.get("properties", {})
    properties.pop("room", None)  # rooms are Socket.IO only
    type_schema: Doc = {"type": "string", "const": event.name}
    if event.name == "chat":
        type_schema["default"] = "chat"
    frame["properties"] = {"type": type_schema, **properties}
    required = [field for field in frame.get("required", []) if field != "room"]
    if event.name != "chat":  # a frame without type is a chat request
        required.insert(0, "type")
    frame["required"] = required
    frame["description"] = f"`{event.name}` as a raw WebSocket frame."
    schemas[frame_name] = frame
    return frame_name


# -- messages and operations ------------------------------------------------------------


def _message(event: EventDoc, payload: Doc, *, raw: bool = False) -> Doc:
    message: Doc = {
        "name": event.name,
        "title": event.name,
        "summary": event.summary,
        "contentType": "application/json",
        "payload": payload,
    }
    if event.description:
        message["description"] = event.description
    if event.examples:
        examples = []
        for example in event.examples:
            shown = example
            if raw and "type" not in example:
                shown = {"type": event.name, **{k: v for k, v in example.items() if k != "room"}}
            examples.append({"payload": shown})
        message["examples"] = examples
    if event.tags:
        message["tags"] = [{"name": tag} for tag in event.tags]
    return message


def _ack_message(event: EventDoc) -> Doc:
    shapes = [_ref(ack) for ack in event.acks] + [_ref(m.ErrorAck)]
    codes = ", ".join(f"`{code.value}`" for code in event.errors)
    return {
        "name": f"{event.name}_ack",
        "title": f"{event.name} acknowledgement",
        "summary": f"What the acknowledgement callback of `{event.name}` receives.",
        "description": f"`{{ok: true, …}}` on success, else `{{ok: false, error}}` "
        f"with code {codes or '`invalid_payload`'}.",
        "contentType": "application/json",
        "payload": {"oneOf": shapes},
    }


def _operation_id(event: EventDoc, channel: str) -> str:
    verb = "receive" if event.sender == "client" else "send"
    prefix = "" if channel == SIO else "raw_"
    return f"{prefix}{verb}_{event.name}"


def _operation(event: EventDoc, channel: str) -> Doc:
    message = {"$ref": f"#/channels/{channel}/messages/{event.name}"}
    operation: Doc = {
        # The document describes the server: it receives client events, sends the others.
        "action": "receive" if event.sender == "client" else "send",
        "channel": {"$ref": f"#/channels/{channel}"},
        "title": event.name,
        "summary": event.summary,
        "messages": [message],
    }
    if event.errors:
        operation["x-error-codes"] = [code.value for code in event.errors]
    if event.tags:
        operation["tags"] = [{"name": tag} for tag in event.tags]
    if event.sender == "client" and channel == SIO:
        operation["reply"] = {
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{event.name}_ack"}],
        }
    return operation


# -- prose ------------------------------------------------------------------------------

_INFO = """\
Streaming LLM chat over Socket.IO (and a raw WebSocket endpoint for compatibility).

Every payload is a JSON object; field names are `snake_case`; times are seconds. Every
client event may take an acknowledgement callback: `{ok: true, ...}` or
`{ok: false, error: {code, message, retryable, retry_after?, details?}}`; the connection
stays open after any refusal.

Invariants a client may rely on:
1. Every accepted request ends with exactly one terminal event, `done` or `error`, and
   nothing for that `request_id` follows it.
2. `seq`, shared by the stream events `token`, `reasoning` and `tool_call`, has no gaps
   and no repeats; joining every `token.content` in `seq` order gives exactly the answer
   text the upstream produced, and every `reasoning.content` the reasoning text.
3. `cancel` ends the request with `done` and `finish_reason: "cancelled"`.
4. `resume {request_id, last_seq}` re-sends every stream event with `seq > last_seq`, in
   order and exactly once, then continues live or sends the terminal event.
5. An upstream retry happens only before the first token, so text is never duplicated.
6. A client never receives events of a room it has not joined, nor of another client's
   private requests.
"""

_SIO_CHANNEL = """\
Events of the default namespace. The payload of each event is one JSON object (the
single argument of `emit`); acknowledgements are Socket.IO acks."""

_RAW_CHANNEL = """\
Text frames holding JSON objects with a `type` field (a frame without `type` is a chat
request in the original template's format). Same payloads as the Socket.IO events; no
rooms. `?format=completion` selects `completion` frames instead of `token`, `reasoning`
and `tool_call` frames. A
frame over `MAX_FRAME_BYTES` closes the connection with code 1009; a refused token closes
it with 4401 after an `error` frame, a refused origin with 4403."""

_TAGS = {
    "streams": "Chat requests and their streamed answers.",
    "rooms": "Multi-user rooms: shared conversation, presence.",
    "auth": "Connecting, session and token refresh.",
}

_SECURITY: Doc = {
    "jwt": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT (HS256 with `JWT_SECRET`, or RS256/ES256 from an identity "
        "provider). Socket.IO: send it in the CONNECT packet as `auth: {token}` (JS: "
        "`io(url, {auth: {token}})`), or as the handshake header "
        "`Authorization: Bearer <jwt>`. Raw WebSocket: the `Authorization` header. A missing, "
        "invalid or expired token refuses the connection (`connect_error` with "
        '`err.message == "unauthorized"` and `err.data.code` `unauthorized` or '
        "`token_expired`). Tokens come from your identity provider, `POST /auth/token` "
        "(built-in accounts) or `POST /auth/guest` (when anonymous access is on). Before "
        "`exp` passes, send `refresh {token}`.",
    },
    "jwtQuery": {
        "type": "httpApiKey",
        "name": "token",
        "in": "query",
        "description": "Raw WebSocket from a browser (which cannot set headers): "
        "`?token=<jwt>`. The query string is redacted in every log.",
    },
}
