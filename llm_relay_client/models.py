"""What the client hands to its users: typed, immutable views of the protocol's payloads."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from llm_relay_client.errors import ChatError

Payload: TypeAlias = dict[str, Any]
ChatMessage: TypeAlias = Mapping[str, Any]  # {"role": ..., "content": ...}
Messages: TypeAlias = str | Sequence[ChatMessage]  # a str is one user message


def as_messages(messages: Messages) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [dict(m) for m in messages]


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    name: str

    @classmethod
    def parse(cls, data: Any) -> Member:
        obj = _dict(data)
        user_id = _str(obj.get("id"))
        return cls(user_id, _str(obj.get("name"), user_id))


def _members(data: Any) -> tuple[Member, ...]:
    return tuple(Member.parse(m) for m in data) if isinstance(data, list) else ()


@dataclass(frozen=True, slots=True)
class Session:
    """The server's ``session`` event: who we are and the limits that apply."""

    sid: str
    user: Member
    limits: Mapping[str, Any]
    default_model: str | None
    protocol: int | None

    @classmethod
    def parse(cls, data: Any) -> Session:
        obj = _dict(data)
        return cls(
            _str(obj.get("sid")),
            Member.parse(obj.get("user")),
            dict(_dict(obj.get("limits"))),
            _opt_str(obj.get("default_model")),
            _opt_int(obj.get("protocol")),
        )


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost: float | None = None
    cached_tokens: int | None = None  # of the prompt, served from the provider's cache
    reasoning_tokens: int | None = None  # of the completion, spent on reasoning

    @classmethod
    def parse(cls, data: Any) -> Usage:
        obj = _dict(data)
        return cls(
            _opt_int(obj.get("prompt_tokens")),
            _opt_int(obj.get("completion_tokens")),
            _opt_int(obj.get("total_tokens")),
            _opt_float(obj.get("cost")),
            _opt_int(obj.get("cached_tokens")),
            _opt_int(obj.get("reasoning_tokens")),
        )


def _seq(obj: Mapping[str, Any], name: str = "seq") -> int:
    seq = _opt_int(obj.get(name))
    return -1 if seq is None else seq


@dataclass(frozen=True, slots=True)
class Token:
    """One ``token`` event: a piece of the answer."""

    event: ClassVar[str] = "token"
    request_id: str
    seq: int
    content: str
    room: str | None = None

    @classmethod
    def parse(cls, data: Any) -> Token:
        obj = _dict(data)
        return cls(
            _str(obj.get("request_id")),
            _seq(obj),
            _str(obj.get("content")),
            _opt_str(obj.get("room")),
        )


@dataclass(frozen=True, slots=True)
class Reasoning:
    """One ``reasoning`` event: a piece of the model's reasoning, streamed before (or
    between) the pieces of the answer."""

    event: ClassVar[str] = "reasoning"
    request_id: str
    seq: int
    content: str
    room: str | None = None

    @classmethod
    def parse(cls, data: Any) -> Reasoning:
        obj = _dict(data)
        return cls(
            _str(obj.get("request_id")),
            _seq(obj),
            _str(obj.get("content")),
            _opt_str(obj.get("room")),
        )


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """One ``tool_call`` event: a piece of a tool call. ``id`` and ``name`` come with the
    first piece of each ``index``; joining the ``arguments`` of one ``index`` in ``seq``
    order gives that call's arguments (``done.tool_calls`` has them assembled)."""

    event: ClassVar[str] = "tool_call"
    request_id: str
    seq: int
    index: int
    arguments: str
    id: str | None = None
    name: str | None = None
    room: str | None = None

    @classmethod
    def parse(cls, data: Any) -> ToolCallDelta:
        obj = _dict(data)
        return cls(
            _str(obj.get("request_id")),
            _seq(obj),
            _opt_int(obj.get("index")) or 0,
            _str(obj.get("arguments")),
            _opt_str(obj.get("id")),
            _opt_str(obj.get("name")),
            _opt_str(obj.get("room")),
        )


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call the model asked for (an item of ``done.tool_calls``)."""

    id: str
    name: str
    arguments: str  # a JSON text, as the model wrote it (it may be invalid)

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as an object; ``ValueError`` if they are not a JSON object."""
        value = json.loads(self.arguments) if self.arguments.strip() else {}
        if not isinstance(value, dict):
            raise ValueError("the arguments are not a JSON object")
        return value

    def to_dict(self) -> dict[str, Any]:
        """The wire shape, as an assistant message's ``tool_calls`` item."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }

    @classmethod
    def parse(cls, data: Any) -> ToolCall:
        obj = _dict(data)
        function = _dict(obj.get("function"))
        return cls(_str(obj.get("id")), _str(function.get("name")), _str(function.get("arguments")))


@dataclass(frozen=True, slots=True)
class Done:
    """The ``done`` event that ended a request.

    ``last_seq`` is the ``seq`` of the request's last stream event (-1: none; ``None``
    from a server older than protocol 2). ``tool_calls`` is set when the model called
    tools (``finish_reason == "tool_calls"``); ``reasoning_details`` holds the
    upstream's reasoning detail objects, to send back unchanged (see
    :meth:`assistant_message`).
    """

    event: ClassVar[str] = "done"
    request_id: str
    finish_reason: str
    model: str | None
    usage: Usage
    room: str | None = None
    last_seq: int | None = None
    generation_id: str | None = None
    provider: str | None = None
    native_finish_reason: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning_details: tuple[Mapping[str, Any], ...] = ()
    raw_tool_calls: tuple[Mapping[str, Any], ...] = field(default=(), repr=False)

    @property
    def cancelled(self) -> bool:
        return self.finish_reason == "cancelled"

    def assistant_message(self, content: str | None = None) -> dict[str, Any]:
        """The assistant turn to put in the next request's ``messages``: the answer text
        (``content``), the tool calls and the reasoning details as the server gave them."""
        message: dict[str, Any] = {"role": "assistant", "content": content or None}
        if self.raw_tool_calls:
            message["tool_calls"] = [dict(call) for call in self.raw_tool_calls]
        if self.reasoning_details:
            message["reasoning_details"] = [dict(item) for item in self.reasoning_details]
        if message["content"] is None and "tool_calls" not in message:
            message["content"] = ""
        return message

    @classmethod
    def parse(cls, data: Any) -> Done:
        obj = _dict(data)
        calls = _objects(obj.get("tool_calls"))
        return cls(
            _str(obj.get("request_id")),
            _str(obj.get("finish_reason"), "stop"),
            _opt_str(obj.get("model")),
            Usage.parse(obj.get("usage")),
            _opt_str(obj.get("room")),
            _opt_int(obj.get("last_seq")),
            _opt_str(obj.get("generation_id")),
            _opt_str(obj.get("provider")),
            _opt_str(obj.get("native_finish_reason")),
            tuple(ToolCall.parse(call) for call in calls),
            _objects(obj.get("reasoning_details")),
            calls,
        )


def _objects(value: Any) -> tuple[Mapping[str, Any], ...]:
    return tuple(v for v in value if isinstance(v, Mapping)) if isinstance(value, list) else ()


@dataclass(frozen=True, slots=True)
class Failure:
    """An ``error`` event that ended a request (``last_seq``: its last stream event)."""

    event: ClassVar[str] = "error"
    request_id: str | None
    error: ChatError
    room: str | None = None
    last_seq: int | None = None

    @classmethod
    def parse(cls, data: Any) -> Failure:
        error = ChatError.from_wire(data)
        obj = _dict(data)
        return cls(error.request_id, error, _opt_str(obj.get("room")), error.last_seq)


StreamEvent: TypeAlias = Token | Reasoning | ToolCallDelta | Done | Failure
STREAM_EVENTS = ("token", "reasoning", "tool_call")  # share one seq counter per request
TERMINAL_EVENTS = ("done", "error")


def stream_event(event: str, payload: Any) -> StreamEvent | None:
    """The typed view of one of a request's events, or ``None`` for other events."""
    parse = _PARSERS.get(event)
    return parse(payload) if parse is not None else None


_PARSERS: dict[str, Callable[[Any], StreamEvent]] = {
    "token": Token.parse,
    "reasoning": Reasoning.parse,
    "tool_call": ToolCallDelta.parse,
    "done": Done.parse,
    "error": Failure.parse,
}


@dataclass(frozen=True, slots=True)
class Message:
    """A room's ``message`` event (also the items of a room's history)."""

    event: ClassVar[str] = "message"

    room: str
    id: str
    user: Member
    role: str
    content: Any  # text, or a list of content parts
    ts: float

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            parts = [p.get("text") for p in self.content if isinstance(p, Mapping)]
            return "".join(p for p in parts if isinstance(p, str))
        return ""

    @classmethod
    def parse(cls, data: Any, room: str | None = None) -> Message:
        obj = _dict(data)
        return cls(
            _str(obj.get("room"), room or ""),
            _str(obj.get("id")),
            Member.parse(obj.get("user")),
            _str(obj.get("role"), "user"),
            obj.get("content"),
            _opt_float(obj.get("ts")) or 0.0,
        )


@dataclass(frozen=True, slots=True)
class Presence:
    """A room's ``presence`` event: who is in it now."""

    event: ClassVar[str] = "presence"

    room: str
    members: tuple[Member, ...]

    @classmethod
    def parse(cls, data: Any) -> Presence:
        obj = _dict(data)
        return cls(_str(obj.get("room")), _members(obj.get("members")))


RoomEvent: TypeAlias = Message | Presence | StreamEvent


def room_event(event: str, payload: Any) -> RoomEvent | None:
    """The typed view of a room's event, or ``None`` for events rooms do not carry."""
    if event == "message":
        return Message.parse(payload)
    if event == "presence":
        return Presence.parse(payload)
    return stream_event(event, payload)
