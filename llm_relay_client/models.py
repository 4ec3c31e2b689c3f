"""What the client hands to its users: typed, immutable views of the protocol's payloads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

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

    @classmethod
    def parse(cls, data: Any) -> Usage:
        obj = _dict(data)
        return cls(
            _opt_int(obj.get("prompt_tokens")),
            _opt_int(obj.get("completion_tokens")),
            _opt_int(obj.get("total_tokens")),
            _opt_float(obj.get("cost")),
        )


@dataclass(frozen=True, slots=True)
class Token:
    """One ``token`` event: a piece of an answer."""

    request_id: str
    seq: int
    content: str
    room: str | None = None

    @classmethod
    def parse(cls, data: Any) -> Token:
        obj = _dict(data)
        seq = _opt_int(obj.get("seq"))
        return cls(
            _str(obj.get("request_id")),
            -1 if seq is None else seq,
            _str(obj.get("content")),
            _opt_str(obj.get("room")),
        )


@dataclass(frozen=True, slots=True)
class Done:
    """The ``done`` event that ended a request."""

    request_id: str
    finish_reason: str
    model: str | None
    usage: Usage
    room: str | None = None

    @property
    def cancelled(self) -> bool:
        return self.finish_reason == "cancelled"

    @classmethod
    def parse(cls, data: Any) -> Done:
        obj = _dict(data)
        return cls(
            _str(obj.get("request_id")),
            _str(obj.get("finish_reason"), "stop"),
            _opt_str(obj.get("model")),
            Usage.parse(obj.get("usage")),
            _opt_str(obj.get("room")),
        )


@dataclass(frozen=True, slots=True)
class Failure:
    """An ``error`` event that ended a request (in a room's event feed)."""

    request_id: str | None
    error: ChatError
    room: str | None = None

    @classmethod
    def parse(cls, data: Any) -> Failure:
        error = ChatError.from_wire(data)
        return cls(error.request_id, error, _opt_str(_dict(data).get("room")))


@dataclass(frozen=True, slots=True)
class Message:
    """A room's ``message`` event (also the items of a room's history)."""

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

    room: str
    members: tuple[Member, ...]

    @classmethod
    def parse(cls, data: Any) -> Presence:
        obj = _dict(data)
        return cls(_str(obj.get("room")), _members(obj.get("members")))


RoomEvent: TypeAlias = Message | Presence | Token | Done | Failure


def room_event(event: str, payload: Any) -> RoomEvent | None:
    """The typed view of a room's event, or ``None`` for events rooms do not carry."""
    if event == "token":
        return Token.parse(payload)
    if event == "done":
        return Done.parse(payload)
    if event == "error":
        return Failure.parse(payload)
    if event == "message":
        return Message.parse(payload)
    if event == "presence":
        return Presence.parse(payload)
    return None
