"""Payload models: one pydantic model per inbound and outbound event (PROTOCOL.md §1).

Inbound models validate what clients send (``extra="forbid"``, strict types).
Outbound models document what the server sends; the AsyncAPI document is generated
from both.  The hot path builds outbound payloads as plain dicts of the same shape.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

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


# -- chat: messages (PROTOCOL.md §1 "Message") -----------------------------------------

ToolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", examples=["get_weather"])]
ToolCallId = Annotated[str, Field(min_length=1, max_length=256)]
Opaque = dict[str, Any]  # forwarded as given (within the payload limits)


class CacheControl(Inbound):
    type: Literal["ephemeral"]


class TextPart(Inbound):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None


class ImageUrl(Inbound):
    url: str = Field(min_length=1, max_length=10_000_000)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(Inbound):
    type: Literal["image_url"]
    image_url: ImageUrl


class FileData(Inbound):
    filename: str = Field(min_length=1, max_length=1024)
    file_data: str = Field(min_length=1)


class FilePart(Inbound):
    type: Literal["file"]
    file: FileData


class InputAudio(Inbound):
    data: str = Field(min_length=1)
    format: str = Field(pattern=r"^[a-z0-9]{1,16}$", examples=["wav", "mp3"])


class AudioPart(Inbound):
    type: Literal["input_audio"]
    input_audio: InputAudio


ContentPart = Annotated[TextPart | ImagePart | FilePart | AudioPart, Field(discriminator="type")]
Content = str | list[ContentPart]
TextContent = str | list[TextPart]


class _Message(Inbound):
    name: str | None = Field(None, min_length=1, max_length=64)

    def text_chars(self) -> int:
        """Characters of text, for ``MAX_MESSAGE_CHARS``."""
        content: Any = getattr(self, "content", None)
        if isinstance(content, str):
            return len(content)
        if isinstance(content, list):
            return sum(len(part.text) for part in content if isinstance(part, TextPart))
        return 0

    def text(self) -> str:
        """The message's text (its text parts joined), as rooms keep it."""
        content: Any = getattr(self, "content", None)
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(part.text for part in content if isinstance(part, TextPart))
        return ""


class SystemMessage(_Message):
    role: Literal["system"]
    content: Content


class UserMessage(_Message):
    role: Literal["user"]
    content: Content


class FunctionCall(Inbound):
    name: ToolName
    arguments: str = Field(max_length=10_000_000, description="A JSON text.")

    @field_validator("arguments")
    @classmethod
    def _json_text(cls, value: str) -> str:
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ValueError("must be a JSON text") from None
        return value


class ToolCall(Inbound):
    id: ToolCallId
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(_Message):
    role: Literal["assistant"]
    content: TextContent | None = None
    tool_calls: list[ToolCall] | None = Field(None, min_length=1, max_length=128)
    reasoning: str | None = None
    reasoning_details: list[Opaque] | None = Field(
        None, description="As the server gave it in `done`, sent back unchanged."
    )

    @model_validator(mode="after")
    def _content_or_tool_calls(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls:
            raise PydanticCustomError(
                "missing_content", "content is required unless tool_calls is given"
            )
        return self


class ToolMessage(_Message):
    role: Literal["tool"]
    tool_call_id: ToolCallId
    content: TextContent


ChatMessage = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


# -- chat: tools, formats, reasoning -------------------------------------------------------


class FunctionDef(Inbound):
    name: ToolName
    description: str | None = Field(None, max_length=100_000)
    parameters: Opaque | None = Field(None, description="A JSON Schema object, as given.")
    strict: bool | None = None


class Tool(Inbound):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(Inbound):
    name: ToolName


class NamedToolChoice(Inbound):
    type: Literal["function"]
    function: NamedFunction


class TextFormat(Inbound):
    type: Literal["text"]


class JsonObjectFormat(Inbound):
    type: Literal["json_object"]


class JsonSchemaSpec(Inbound):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    schema_: Opaque = Field(alias="schema", description="A JSON Schema object, as given.")
    strict: bool | None = None
    description: str | None = None


class JsonSchemaFormat(Inbound):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class Reasoning(Inbound):
    effort: Literal["minimal", "low", "medium", "high"] | None = None
    max_tokens: int | None = Field(None, ge=0, le=1_000_000)
    exclude: bool | None = None
    enabled: bool | None = None


# Fields only OpenRouter knows: refused in the ``openai`` dialect (UPSTREAM_DIALECT).
OPENROUTER_ONLY_FIELDS = ("models", "provider", "transforms", "plugins")


class ChatRequest(Inbound):
    """``chat``: start a streamed completion.

    Every field but ``request_id`` and ``room`` is forwarded to the upstream exactly as
    sent, once it passed these checks (``provider``, ``plugins``, JSON schemas and tool
    parameters are opaque objects).
    """

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
        None,
        min_length=1,
        max_length=10,
        description="Fallback models, tried in order by the upstream (OpenRouter only).",
    )
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=1_000_000)
    min_p: float | None = Field(None, ge=0, le=1)
    top_a: float | None = Field(None, ge=0, le=1)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    stop: str | Annotated[list[str], Field(max_length=16)] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    logit_bias: dict[Annotated[str, Field(pattern=r"^[0-9]{1,10}$")], float] | None = Field(
        None, max_length=1024
    )
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Tool] | None = Field(None, min_length=1, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning: Reasoning | None = None
    provider: Opaque | None = Field(
        None, description="OpenRouter provider routing, forwarded as given (OpenRouter only)."
    )
    transforms: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None, max_length=16, description="OpenRouter only."
    )
    plugins: list[Opaque] | None = Field(
        None, max_length=16, description="OpenRouter plugins, forwarded as given."
    )
    room: RoomName | None = Field(None, description="Chat in this room (join it first).")

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and any(not -100 <= bias <= 100 for bias in value.values()):
            raise ValueError("each bias must be between -100 and 100")
        return value


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
