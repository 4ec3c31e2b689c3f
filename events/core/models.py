"""Payload models: one pydantic model per inbound and outbound event (PROTOCOL.md §1).

Inbound models validate what clients send (``extra="forbid"``, strict types).
Outbound models document what the server sends; the AsyncAPI document is generated
from both.  The hot path builds outbound payloads as plain dicts of the same shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from events.core.errors import ErrorCode

REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ROOM_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"

RequestId = Annotated[str, Field(pattern=REQUEST_ID_PATTERN, examples=["req-1"])]
RoomName = Annotated[str, Field(pattern=ROOM_PATTERN, examples=["lobby"])]
ModelName = Annotated[str, Field(min_length=1, max_length=200, examples=["openai/gpt-4o-mini"])]


class Inbound(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Outbound(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageUrl(Inbound):
    url: str = Field(max_length=10_000_000)
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(Inbound):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageUrl | None = None


class ChatMessage(Inbound):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = Field(None, min_length=1, max_length=64)

    def text_chars(self) -> int:
        """Characters of text, for ``MAX_MESSAGE_CHARS``."""
        content = self.content
        if isinstance(content, str):
            return len(content)
        return sum(len(part.text or "") for part in content)


class ChatRequest(Inbound):
    """``chat``: start a streamed completion."""

    request_id: RequestId | None = Field(
        None, description="Client-chosen id of this request; the server makes one if absent."
    )
    messages: list[ChatMessage] = Field(
        min_length=1, description="The conversation; with `room`, only the new message(s)."
    )
    model: ModelName | None = Field(
        None, description="Default from `DEFAULT_MODEL`; must pass `ALLOWED_MODELS` if set."
    )
    models: list[ModelName] | None = Field(
        None, max_length=10, description="Fallback models, tried in order by the upstream."
    )
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    room: RoomName | None = Field(None, description="Chat in this room (join it first).")


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
    protocol: Literal[1] = 1


class TokenEvent(Outbound):
    """``token``: one or more upstream deltas joined; ``seq`` is 0, 1, 2… per request."""

    request_id: str
    seq: int
    content: str
    room: str | None = None


class Usage(Outbound):
    model_config = ConfigDict(extra="allow")
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost: float | None = None


class DoneEvent(Outbound):
    """``done``: the request finished (``finish_reason: "cancelled"`` after ``cancel``)."""

    request_id: str
    finish_reason: str
    model: str | None
    usage: Usage
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


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    """``details`` for ``invalid_payload``: ``[{field: "messages.0.role", message}]``."""
    out: list[dict[str, str]] = []
    for err in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in err["loc"]) or "(payload)"
        out.append({"field": field, "message": err["msg"]})
        if len(out) >= 20:
            break
    return out


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
