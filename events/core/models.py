"""Payload models: one pydantic model per inbound and outbound event (PROTOCOL.md §1).

Inbound models validate what clients send (``extra="forbid"``, strict types).
Outbound models document what the server sends; the AsyncAPI document is generated
from both.  The hot path builds outbound payloads as plain dicts of the same shape.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from events.core.chat_request import (
    OPENROUTER_ONLY_FIELDS,
    AssistantMessage,
    ChatMessage,
    ChatRequest,
    SystemMessage,
    ToolMessage,
    UserMessage,
)
from events.core.errors import ErrorCode
from events.core.inbound import (
    REQUEST_ID_PATTERN,
    ROOM_PATTERN,
    Inbound,
    ModelName,
    RequestId,
    RoomName,
)

__all__ = [  # the inbound models live in their own modules; import them from here too
    "OPENROUTER_ONLY_FIELDS",
    "REQUEST_ID_PATTERN",
    "ROOM_PATTERN",
    "AssistantMessage",
    "ChatMessage",
    "ChatRequest",
    "Inbound",
    "ModelName",
    "RequestId",
    "RoomName",
    "SystemMessage",
    "ToolMessage",
    "UserMessage",
]


class Outbound(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CancelRequest(Inbound):
    """``cancel``: stop a request of one's own."""

    request_id: RequestId


class RoomRequest(Inbound):
    """``join`` / ``leave``."""

    room: RoomName


class ResumeRequest(Inbound):
    """``resume``: replay tokens with ``seq > last_seq``, then continue live."""

    request_id: RequestId
    last_seq: int = Field(
        ge=-1, le=2**31, description="The last `seq` received; -1 replays from the start."
    )


class RefreshRequest(Inbound):
    """``refresh``: replace the connection's token before it expires."""

    token: str = Field(min_length=1, max_length=16_384)


# -- outbound ------------------------------------------------------------------


class User(Outbound):
    id: str
    name: str


class Limits(Outbound):
    max_payload_bytes: int
    max_messages: int
    max_message_chars: int
    max_streams_per_connection: int
    rate_limit_per_minute: int


class SessionEvent(Outbound):
    """``session``: sent once after a successful connect."""

    sid: str
    user: User
    limits: Limits
    default_model: str
    protocol: Literal[2] = 2


class TokenEvent(Outbound):
    """``token``: answer text, one or more upstream deltas joined.

    ``seq`` is 0, 1, 2… per request, shared by ``token``, ``reasoning`` and ``tool_call``.
    """

    request_id: str
    seq: int
    content: str
    room: str | None = None


class ReasoningEvent(Outbound):
    """``reasoning``: the model's reasoning text (``delta.reasoning``), as it streams."""

    request_id: str
    seq: int
    content: str
    room: str | None = None


class ToolCallEvent(Outbound):
    """``tool_call``: a piece of one tool call; joining ``arguments`` of one ``index`` in
    ``seq`` order gives that call's arguments text."""

    request_id: str
    seq: int
    index: int
    id: str | None = Field(None, description="With the first event of each index.")
    name: str | None = Field(None, description="With the first event of each index.")
    arguments: str
    room: str | None = None


class Usage(Outbound):
    model_config = ConfigDict(extra="allow")
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost: float | None = None
    cached_tokens: int | None = Field(None, description="From `prompt_tokens_details`.")
    reasoning_tokens: int | None = Field(None, description="From `completion_tokens_details`.")


class DoneFunction(Outbound):
    name: str | None
    arguments: str


class DoneToolCall(Outbound):
    id: str | None
    type: Literal["function"] = "function"
    function: DoneFunction


class DoneEvent(Outbound):
    """``done``: the request finished (``finish_reason: "cancelled"`` after ``cancel``)."""

    request_id: str
    finish_reason: str
    model: str | None
    usage: Usage
    last_seq: int = Field(description="`seq` of the last stream event; -1 if none.")
    generation_id: str | None = Field(None, description="The upstream's response `id`.")
    provider: str | None = None
    native_finish_reason: str | None = None
    tool_calls: list[DoneToolCall] | None = Field(
        None, description='The assembled calls, when the model called tools ("tool_calls").'
    )
    reasoning_details: list[dict[str, Any]] | None = Field(
        None,
        description="The upstream's reasoning detail objects (text pieces of one index "
        "merged); send them back on the assistant message.",
    )
    room: str | None = None


class ErrorDetail(Outbound):
    field: str
    message: str


class ErrorObject(Outbound):
    code: ErrorCode
    message: str
    retryable: bool
    retry_after: float | None = None
    details: list[ErrorDetail] | None = None


class ErrorEvent(ErrorObject):
    """``error``: the terminal event of a failed request, or a refusal."""

    request_id: str | None = None
    last_seq: int | None = Field(
        None, description="`seq` of the last stream event, when the request had streamed."
    )
    room: str | None = None


class MessageEvent(Outbound):
    """``message``: a message appended to a room's conversation."""

    room: str
    id: str
    user: User
    role: Literal["system", "user", "assistant"]
    content: str | list[dict[str, Any]]
    ts: float


class PresenceEvent(Outbound):
    """``presence``: the room's members changed."""

    room: str
    members: list[User]


class Ack(Outbound):
    ok: bool
    error: ErrorObject | None = None


class RefusalData(Outbound):
    code: ErrorCode
    message: str


class ConnectRefusal(Outbound):
    """Socket.IO's ``connect_error``: ``err.message`` and ``err.data`` of a refused connect."""

    message: Literal["unauthorized", "rate_limited"]
    data: RefusalData


class CompletionFrame(Outbound):
    """Raw WebSocket with ``?format=completion``: one upstream chunk, as the upstream sent it."""

    type: Literal["completion"] = "completion"
    data: dict[str, Any]


class RefreshedFrame(Outbound):
    """Raw WebSocket: the answer to a ``refresh`` frame."""

    type: Literal["refreshed"] = "refreshed"
    expires_at: int


# -- acknowledgements (what a client's callback receives) ---------------------------------


class ErrorAck(Outbound):
    """Any refused client event: the connection stays open."""

    ok: Literal[False] = False
    error: ErrorObject


class OkAck(Outbound):
    """``cancel``, ``leave`` and ``resume`` (the replay follows) succeeded."""

    ok: Literal[True] = True


class ChatAck(Outbound):
    """``chat`` accepted; exactly one ``done`` or ``error`` for ``request_id`` follows."""

    ok: Literal[True] = True
    request_id: str


class JoinAck(Outbound):
    """``join`` succeeded: who is there and the last ``ROOM_HISTORY_LIMIT`` messages."""

    ok: Literal[True] = True
    room: str
    members: list[User]
    history: list[MessageEvent]


class RefreshAck(Outbound):
    """``refresh`` succeeded; ``expires_at`` is the new token's ``exp`` (epoch seconds)."""

    ok: Literal[True] = True
    expires_at: int


# Labels pydantic puts into an error's location for union members: not field names.
_TAGS = frozenset(
    {"system", "user", "assistant", "tool", "text", "image_url", "file", "input_audio"}
    | {"json_object", "json_schema", "function-after[_json_text(), str]"}
)
_UNION_LABEL = re.compile(
    r"^(str|int|float|bool|none|list\[.*\]|dict\[.*\]|literal\[.*\]|"
    r"function-after\[.*\]|[A-Z][A-Za-z]+)$"
)


def _field_path(err: Any) -> str:
    """``messages.2.tool_calls.0.function.arguments``: the location without union labels."""
    parts: list[str] = []
    previous: Any = None
    for part in err["loc"]:
        tagged = previous in ("response_format", "tool_choice") or isinstance(previous, int)
        if isinstance(part, str) and (
            (tagged and part in _TAGS) or (_UNION_LABEL.match(part) and previous is not None)
        ):
            previous = part
            continue
        parts.append(str(part))
        previous = part
    if err["type"] == "missing_content":
        parts.append("content")
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        parts.append(str(err.get("ctx", {}).get("discriminator", "type")).strip("'"))
    return ".".join(parts) or "(payload)"


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    """``details`` for ``invalid_payload``: ``[{field: "messages.0.role", message}]``.

    One entry per field.  Where a union's members failed differently, the deepest
    location wins (``messages.0.content.1.image_url.url`` rather than "content should be a
    string"), and a range or shape error wins over "should be a <type>".
    """
    found: dict[str, tuple[bool, str]] = {}
    for err in exc.errors(include_url=False, include_input=False):
        path = _field_path(err)
        specific = not err["type"].endswith("_type")
        if path not in found or (specific and not found[path][0]):
            found[path] = (specific, err["msg"])
    paths = [p for p in found if not any(o.startswith(p + ".") for o in found)]
    return [{"field": path, "message": found[path][1]} for path in paths[:20]]


def within_budget(data: Any, budget: int) -> bool:
    """Whether ``data`` holds at most ``budget`` JSON values (object members, array items).

    Checked before validation: pydantic reports one error per bad item or unknown field,
    and a megabyte of ``[1,1,1,…]`` or ``{"a":0,"b":0,…}`` would otherwise cost seconds
    of CPU and hundreds of megabytes for its error list.  Stops as soon as it is over.
    """
    stack = [data]
    seen = 0
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            seen += len(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            seen += len(value)
            stack.extend(value)
        else:
            continue
        if seen > budget:
            return False
    return True
