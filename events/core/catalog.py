"""Every event of the wire protocol, described once: name, direction, payload model, acks.

The AsyncAPI document (``events.core.asyncapi``) and the ``/docs/events`` page are generated
from these entries and the pydantic models they name, the same models that validate
the events; an extension's events (``events.core.extension.EventSpec``) are entries too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from events.core import models as m
from events.core.errors import ErrorCode

Sender = Literal["client", "server"]

_VALIDATION = (ErrorCode.INVALID_PAYLOAD,)
_UPSTREAM = (
    ErrorCode.UPSTREAM_BAD_REQUEST,
    ErrorCode.UPSTREAM_AUTH,
    ErrorCode.INSUFFICIENT_CREDITS,
    ErrorCode.MODERATION,
    ErrorCode.UPSTREAM_TIMEOUT,
    ErrorCode.UPSTREAM_RATE_LIMITED,
    ErrorCode.UPSTREAM_UNAVAILABLE,
    ErrorCode.UPSTREAM_ERROR,
    ErrorCode.SERVER_SHUTDOWN,
    ErrorCode.INTERNAL,
)


@dataclass(frozen=True)
class EventDoc:
    """One event: who sends it, its payload model, and (client events) its acks and errors."""

    name: str
    sender: Sender
    payload: type[BaseModel]
    summary: str
    description: str = ""
    acks: tuple[type[BaseModel], ...] = ()  # success shapes; ``ErrorAck`` is always possible
    errors: tuple[ErrorCode, ...] = ()  # codes its ack (or, for ``error``, the event) can carry
    examples: tuple[dict[str, Any], ...] = ()  # example payloads (checked against the model)
    raw_frame: bool = False  # also a ``{"type": name, ...}`` frame on the raw WebSocket
    socketio: bool = True  # False: a raw WebSocket frame only
    tags: tuple[str, ...] = field(default=())


_MSG = [{"role": "user", "content": "Say hello"}]

CLIENT_EVENTS: tuple[EventDoc, ...] = (
    EventDoc(
        "chat",
        "client",
        m.ChatRequest,
        "Start a streamed completion.",
        "Without `room`, `messages` is the whole conversation. With `room` (joined first), "
        "`messages` holds only the new message(s): they are broadcast as `message` events "
        "and the reply streams to every member. Unknown fields are refused. A refused "
        "request also gets an `error` event with the same code. Every other field is checked "
        "for shape and range and forwarded to the upstream exactly as sent (`n` and `user` "
        "are refused; the server sends a per-user pseudonym as `user`); with "
        "`UPSTREAM_DIALECT=openai`, `models`, `provider`, `transforms` and `plugins` are "
        "refused. An accepted request streams `reasoning`, `token` and `tool_call` events "
        "(one `seq`: 0, 1, 2…) and ends with exactly one `done` or `error`.",
        acks=(m.ChatAck,),
        errors=(
            ErrorCode.INVALID_PAYLOAD,
            ErrorCode.PAYLOAD_TOO_LARGE,
            ErrorCode.MODEL_NOT_ALLOWED,
            ErrorCode.RATE_LIMITED,
            ErrorCode.TOO_MANY_STREAMS,
            ErrorCode.FORBIDDEN,
            ErrorCode.SERVER_SHUTDOWN,
            ErrorCode.INTERNAL,
        ),
        examples=(
            {"request_id": "req-1", "messages": _MSG, "model": "openai/gpt-4o-mini"},
            {"messages": _MSG, "room": "lobby"},
            {
                "request_id": "req-2",
                "messages": [{"role": "user", "content": "Weather in Paris?"}],
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "parameters": {
                                "type": "object",
                                "properties": {"city": {"type": "string"}},
                            },
                        },
                    }
                ],
                "reasoning": {"effort": "low"},
            },
            {
                "request_id": "req-3",
                "messages": [
                    {"role": "user", "content": "Weather in Paris?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {
                                    "name": "get_weather",
                                    "arguments": '{"city": "Paris"}',
                                },
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
                ],
            },
        ),
        raw_frame=True,
        tags=("streams",),
    ),
    EventDoc(
        "cancel",
        "client",
        m.CancelRequest,
        "Stop one of your own requests.",
        'The request ends with `done` and `finish_reason: "cancelled"`; the upstream '
        "HTTP request is closed.",
        acks=(m.OkAck,),
        errors=(*_VALIDATION, ErrorCode.NOT_FOUND),
        examples=({"request_id": "req-1"},),
        raw_frame=True,
        tags=("streams",),
    ),
    EventDoc(
        "join",
        "client",
        m.RoomRequest,
        "Join a room.",
        "Names are 1-64 characters of `[A-Za-z0-9_.:-]`; names starting with `_` or equal "
        "to a connection id are `forbidden`, as is joining more than "
        "`MAX_ROOMS_PER_CONNECTION` rooms; so is a room the token's optional `rooms` claim "
        "(fnmatch patterns) does not allow. Members get a `presence` event. With "
        "`REDIS_URL`, while Redis is unreachable `join` (and `chat` with `room`) is "
        "refused with a retryable `internal`.",
        acks=(m.JoinAck,),
        errors=(*_VALIDATION, ErrorCode.FORBIDDEN, ErrorCode.INTERNAL),
        examples=({"room": "lobby"},),
        tags=("rooms",),
    ),
    EventDoc(
        "leave",
        "client",
        m.RoomRequest,
        "Leave a room.",
        "Leaving a room not joined is `not_found`.",
        acks=(m.OkAck,),
        errors=(*_VALIDATION, ErrorCode.NOT_FOUND),
        examples=({"room": "lobby"},),
        tags=("rooms",),
    ),
    EventDoc(
        "resume",
        "client",
        m.ResumeRequest,
        "Replay a request's stream events after `last_seq`, then continue live.",
        "Every `token`, `reasoning` and `tool_call` with `seq > last_seq` is sent again, "
        "in order and exactly once "
        "(`last_seq: -1` replays from the start), then the stream continues or ends. A "
        "finished request stays resumable for `RESUME_RETENTION_S`. Only the owner or a "
        "member of the request's room may resume.",
        acks=(m.OkAck,),
        errors=(*_VALIDATION, ErrorCode.NOT_FOUND, ErrorCode.FORBIDDEN),
        examples=({"request_id": "req-1", "last_seq": 41},),
        raw_frame=True,
        tags=("streams",),
    ),
    EventDoc(
        "refresh",
        "client",
        m.RefreshRequest,
        "Replace the connection's token before it expires.",
        "The new token must be valid and for the same `sub` (else `forbidden`). Without a "
        "refresh the server sends `error {code: token_expired}` when `exp` passes and "
        "disconnects.",
        acks=(m.RefreshAck,),
        errors=(
            *_VALIDATION,
            ErrorCode.UNAUTHORIZED,
            ErrorCode.TOKEN_EXPIRED,
            ErrorCode.FORBIDDEN,
        ),
        examples=({"token": "eyJhbGciOi…"},),
        raw_frame=True,
        tags=("auth",),
    ),
)

SERVER_EVENTS: tuple[EventDoc, ...] = (
    EventDoc(
        "session",
        "server",
        m.SessionEvent,
        "Sent once after a successful connect.",
        "Who you are (the token's `sub` and `name`), the limits in force, the default model.",
        examples=(
            {
                "sid": "hV3kq0Yk1B0AAAAB",
                "user": {"id": "alice", "name": "Alice"},
                "limits": {
                    "max_payload_bytes": 1000000,
                    "max_messages": 500,
                    "max_message_chars": 100000,
                    "max_streams_per_connection": 4,
                    "rate_limit_per_minute": 60,
                },
                "default_model": "openrouter/auto",
                "protocol": 2,
            },
        ),
        tags=("auth",),
    ),
    EventDoc(
        "token",
        "server",
        m.TokenEvent,
        "Text of a streamed answer.",
        "`seq` is 0, 1, 2… per request, shared with `reasoning` and `tool_call`, with no "
        "gaps or repeats; joining every `token.content` in `seq` order gives exactly the "
        "answer text the upstream produced.",
        examples=({"request_id": "req-1", "seq": 0, "content": "Hello"},),
        raw_frame=True,
        tags=("streams",),
    ),
    EventDoc(
        "reasoning",
        "server",
        m.ReasoningEvent,
        "The model's reasoning text, as it streams (reasoning models).",
        "From the upstream's `delta.reasoning` (or `delta.reasoning_content`). Never mixed "
        "with answer text: reasoning and answer arrive as separate events on one `seq`.",
        examples=({"request_id": "req-1", "seq": 0, "content": "The user wants"},),
        raw_frame=True,
        tags=("streams",),
    ),
    EventDoc(
        "tool_call",
        "server",
        m.ToolCallEvent,
        "A piece of a tool call the model makes.",
        "`id` and `name` come with the first event of each `index`; joining `arguments` of "
        "one `index` in `seq` order gives that call's arguments (a JSON text). `done` then "
        'has `finish_reason: "tool_calls"` and the assembled `tool_calls`: run them and '
        "send a follow-up `chat` with the assistant's `tool_calls` and one `tool` message "
        "per call.",
        examples=(
            {
                "request_id": "req-2",
                "seq": 3,
                "index": 0,
                "id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": ',
            },
            {"request_id": "req-2", "seq": 4, "index": 0, "arguments": '"Paris"}'},
        ),
        raw_frame=True,
        tags=("streams",),
    ),
    EventDoc(
        "done",
        "server",
        m.DoneEvent,
        "The request finished; nothing for its `request_id` follows.",
        "`finish_reason` is the upstream's (`stop`, `length`, `tool_calls`…) or "
        "`cancelled`; `model`, `generation_id`, `provider`, `native_finish_reason` and "
        "`usage` as the upstream reported them. `last_seq` is the `seq` of the last stream "
        "event (-1 if none), so a client can tell it missed nothing.",
        examples=(
            {
                "request_id": "req-1",
                "finish_reason": "stop",
                "model": "openai/gpt-4o-mini",
                "usage": {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52},
                "last_seq": 17,
                "generation_id": "gen-123",
                "provider": "OpenAI",
                "native_finish_reason": "stop",
            },
            {
                "request_id": "req-2",
                "finish_reason": "tool_calls",
                "model": "openai/gpt-4o",
                "usage": {
                    "prompt_tokens": 80,
                    "completion_tokens": 30,
                    "total_tokens": 110,
                    "cached_tokens": 64,
                    "reasoning_tokens": 12,
                },
                "last_seq": 4,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
        ),
        raw_frame=True,
        tags=("streams",),
    ),
    EventDoc(
        "error",
        "server",
        m.ErrorEvent,
        "A request failed (its terminal event), a `chat` was refused, or the token expired.",
        "`retryable` tells whether the same request may succeed later; `retry_after` "
        "(seconds) comes with rate limits; `last_seq` when the request had streamed.",
        errors=tuple(ErrorCode),
        examples=(
            {
                "request_id": "req-1",
                "code": "upstream_unavailable",
                "message": "The model provider is unavailable",
                "retryable": True,
            },
        ),
        raw_frame=True,
        tags=("streams",),
    ),
    EventDoc(
        "message",
        "server",
        m.MessageEvent,
        "A message was appended to a room's conversation.",
        "`ts` is epoch seconds.",
        examples=(
            {
                "room": "lobby",
                "id": "msg-1",
                "user": {"id": "alice", "name": "Alice"},
                "role": "user",
                "content": "Hello room",
                "ts": 1735689600.0,
            },
        ),
        tags=("rooms",),
    ),
    EventDoc(
        "presence",
        "server",
        m.PresenceEvent,
        "A room's members changed.",
        examples=({"room": "lobby", "members": [{"id": "alice", "name": "Alice"}]},),
        tags=("rooms",),
    ),
    EventDoc(
        "connect_error",
        "server",
        m.ConnectRefusal,
        "Socket.IO's own refusal of a connect (not an emitted event).",
        'JS: `socket.on("connect_error", err => …)` with `err.message` and `err.data`. '
        "A missing or invalid token is `unauthorized`, an expired one `token_expired`; too "
        "many connections of one user is `rate_limited`.",
        errors=(ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED, ErrorCode.RATE_LIMITED),
        examples=(
            {
                "message": "unauthorized",
                "data": {"code": "token_expired", "message": "The token has expired."},
            },
        ),
        tags=("auth",),
    ),
)

RAW_ONLY_FRAMES: tuple[EventDoc, ...] = (
    EventDoc(
        "completion",
        "server",
        m.CompletionFrame,
        "With `?format=completion`: each upstream chunk as it came (the original template).",
        "Sent instead of `token`, `reasoning` and `tool_call` frames; `done` and `error` "
        "frames stay as they are.",
        examples=(
            {
                "type": "completion",
                "data": {"choices": [{"index": 0, "delta": {"content": "Hello"}}]},
            },
        ),
        raw_frame=True,
        socketio=False,
        tags=("streams",),
    ),
    EventDoc(
        "refreshed",
        "server",
        m.RefreshedFrame,
        "The answer to a `refresh` frame.",
        examples=({"type": "refreshed", "expires_at": 1735693200},),
        raw_frame=True,
        socketio=False,
        tags=("auth",),
    ),
)

CORE_EVENTS: tuple[EventDoc, ...] = CLIENT_EVENTS + SERVER_EVENTS + RAW_ONLY_FRAMES
