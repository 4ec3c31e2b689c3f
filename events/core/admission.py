"""One admission path for ``chat``, shared by both transports.

A chat payload is admitted in this order, the same on Socket.IO and the raw WebSocket:
shape and size (``payload_too_large`` before any validation work), the request model
(``invalid_payload`` naming the field), the model allowlist, room membership, then the
claims of a running request: its ``request_id`` (one in flight per user and id), a
stream slot of the connection, the user's daily budget (its ``Meter`` rides on the
ticket), then a stream slot of the user and a count against the rate limit, taken
together (``StreamGate``: one Redis round trip when the limits are shared).  A
``Ticket`` holds the claims until the pipeline has taken the request over
(``Admission.settle``) or it was refused after all (``Admission.release``).

Refusals become one error shape (``refusal``) that each transport only sends.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from auth.tokens import Identity
from events.core.errors import ErrorCode, ProtocolError, to_protocol_error
from events.core.models import (
    OPENROUTER_ONLY_FIELDS,
    REQUEST_ID_PATTERN,
    ChatRequest,
    Inbound,
    validation_details,
    within_budget,
)
from events.core.pseudonym import UserPseudonym
from services.budget import BudgetExceeded, Budgets, Meter
from services.generations import GenerationRegistry
from services.storage.limits import StreamGate
from services.storage.streamlog import stream_key

Payload = dict[str, Any]


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    default_model: str
    allowed_models: frozenset[str] = frozenset()
    max_payload_bytes: int = 1_000_000
    max_messages: int = 500
    max_message_chars: int = 100_000
    max_streams_per_connection: int = 4
    max_streams_per_user: int = 8
    token_coalesce_s: float = 0.0  # deltas within this window after the first go out as one
    token_coalesce_busy_s: float = 0.0  # a faster stream's window, if that is longer
    max_json_values: int = 20_000  # object members + array items in one chat payload
    dialect: str = "openrouter"  # UPSTREAM_DIALECT: "openai" refuses OpenRouter-only fields


@dataclass(frozen=True, slots=True)
class Requester:
    identity: Identity
    conn_id: str
    transport: str  # "socketio" | "websocket"


_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
_LOCAL_FIELDS = frozenset({"request_id", "room"})  # never leave the server
_MAX_EVENT_VALUES = 64  # cancel, resume, refresh, join, leave hold a few scalars

M = TypeVar("M", bound=Inbound)


def new_request_id() -> str:
    return "req_" + secrets.token_urlsafe(12).replace("-", "_")


def payload_size(data: Any) -> int:
    """The payload's size as JSON.  Never 0 for what cannot be encoded: that is refused
    (a lone surrogate such as ``"\\ud800"`` decodes in Python but is no valid UTF-8)."""
    try:
        return len(orjson.dumps(data))
    except TypeError:  # orjson.JSONEncodeError too
        raise ProtocolError(
            ErrorCode.INVALID_PAYLOAD, "The payload holds text that is not valid Unicode."
        ) from None


def parse(model: type[M], data: Any) -> M:
    """Validate a small inbound payload (cancel, resume, join…) with field details."""
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.INVALID_PAYLOAD, "The payload must be a JSON object.")
    if not within_budget(data, _MAX_EVENT_VALUES):
        raise ProtocolError(ErrorCode.INVALID_PAYLOAD, "The payload has too many fields.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(
            ErrorCode.INVALID_PAYLOAD, "The payload is invalid.", details=validation_details(exc)
        ) from None


def claimed_request_id(data: Any) -> str | None:
    """The ``request_id`` a refused payload named, when it is a valid one."""
    if isinstance(data, dict):
        rid = data.get("request_id")
        if isinstance(rid, str) and _REQUEST_ID.match(rid):
            return rid
    return None


def refusal(exc: Exception, data: Any) -> tuple[Payload, Payload]:
    """A refused ``chat``: the ack's error object, and the ``error`` event (with the
    ``request_id`` the payload named, when valid) that clients without acks rely on."""
    error = to_protocol_error(exc).to_wire()
    event = dict(error)
    request_id = claimed_request_id(data)
    if request_id is not None:
        event["request_id"] = request_id
    return error, event


@dataclass(slots=True, eq=False)
class Ticket:
    """The claims of one admitted request, held until the pipeline runs it."""

    who: Requester
    request_id: str
    key: str
    slot: str  # the user's stream slot (released when the request ends)
    meter: Meter | None = None  # the user's daily budget, counted as the stream goes
    settled: bool = False


class Admission:
    def __init__(
        self,
        config: PipelineConfig,
        *,
        registry: GenerationRegistry,
        streams: StreamGate,
        pseudonym: UserPseudonym | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        self.config = config
        self.budgets = budgets  # per-user daily budgets (services.budget); None: none
        self._pseudonym = pseudonym or UserPseudonym("llm-relay")
        self._registry = registry
        # Streams in flight and requests per minute per user; shared between nodes when
        # given a Redis gate.
        self._streams = streams
        self._starting: dict[str, str] = {}  # stream key -> conn_id, between claim and settle

    # -- the payload ----------------------------------------------------------------------

    def validate(self, data: Any, size: int | None = None, *, rooms: bool = True) -> ChatRequest:
        """A ``chat`` payload as a ``ChatRequest``, or ``ProtocolError`` with its code."""
        if not isinstance(data, dict):
            raise ProtocolError(ErrorCode.INVALID_PAYLOAD, "The payload must be a JSON object.")
        self._check_size(data, size)
        if not rooms and "room" in data:
            raise ProtocolError(
                ErrorCode.INVALID_PAYLOAD,
                "Rooms are not available on the raw WebSocket endpoint.",
                details=[{"field": "room", "message": "not allowed here"}],
            )
        try:
            req = ChatRequest.model_validate(data)
        except ValidationError as exc:
            raise ProtocolError(
                ErrorCode.INVALID_PAYLOAD,
                "The chat request is invalid.",
                details=validation_details(exc),
            ) from None
        self._check_messages(req)
        self._check_models(req)
        self._check_dialect(data)
        return req

    def _check_size(self, data: dict[str, Any], size: int | None) -> None:
        cfg = self.config
        if size is None:  # a raw frame's size is known (and its text is valid Unicode)
            size = payload_size(data)
        if size > cfg.max_payload_bytes:
            raise ProtocolError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"The payload is {size} bytes; the limit is {cfg.max_payload_bytes}.",
            )
        if not within_budget(data, cfg.max_json_values):
            raise ProtocolError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"The payload holds more than {cfg.max_json_values} JSON values.",
            )
        messages = data.get("messages")
        if isinstance(messages, list) and len(messages) > cfg.max_messages:
            raise ProtocolError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"{len(messages)} messages; the limit is {cfg.max_messages}.",
            )

    def _check_messages(self, req: ChatRequest) -> None:
        limit = self.config.max_message_chars
        for index, message in enumerate(req.messages):
            if req.room is not None and (
                message.role == "tool" or getattr(message, "tool_calls", None)
            ):
                field = "role" if message.role == "tool" else "tool_calls"
                raise ProtocolError(
                    ErrorCode.INVALID_PAYLOAD,
                    "A room's conversation holds text messages only.",
                    details=[{"field": f"messages.{index}.{field}", "message": "not in rooms"}],
                )
            chars = message.text_chars()
            if chars > limit:
                raise ProtocolError(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"Message {index} has {chars} characters; the limit is {limit}.",
                    details=[{"field": f"messages.{index}.content", "message": "too long"}],
                )

    def _check_models(self, req: ChatRequest) -> None:
        cfg = self.config
        if cfg.allowed_models:
            for name in [req.model or cfg.default_model, *(req.models or [])]:
                if name not in cfg.allowed_models:
                    raise ProtocolError(
                        ErrorCode.MODEL_NOT_ALLOWED, f"The model {name!r} is not allowed."
                    )

    def _check_dialect(self, data: dict[str, Any]) -> None:
        if self.config.dialect == "openrouter":
            return
        refused = [name for name in OPENROUTER_ONLY_FIELDS if data.get(name) is not None]
        if refused:
            raise ProtocolError(
                ErrorCode.INVALID_PAYLOAD,
                "This server's upstream does not take OpenRouter's fields.",
                details=[{"field": name, "message": "OpenRouter only"} for name in refused],
            )

    @staticmethod
    def check_room(req: ChatRequest, joined: Callable[[str], bool]) -> None:
        if req.room is not None and not joined(req.room):
            raise ProtocolError(ErrorCode.FORBIDDEN, "Join the room before chatting in it.")

    def upstream_body(
        self,
        data: dict[str, Any],
        sub: str,
        messages: list[Payload] | None = None,
    ) -> Payload:
        """What the upstream receives: the validated payload's fields exactly as the client
        sent them (not ``request_id``, ``room`` and fields set to null), the model (default
        applied) and the user's pseudonym; the upstream client adds ``stream`` and the usage
        flags.

        ``messages``: a room's conversation, instead of the payload's new messages.
        """
        # A top-level null means "not set" (every optional field defaults to it): left out.
        body: Payload = {k: v for k, v in data.items() if v is not None and k not in _LOCAL_FIELDS}
        if messages is not None:
            body["messages"] = messages
        if body.get("model") is None:
            body["model"] = self.config.default_model
        body["user"] = self._pseudonym(sub)
        return body

    # -- the claims ------------------------------------------------------------------------

    async def claim(self, who: Requester, req: ChatRequest) -> Ticket:
        """Claim the request id, a connection stream slot, the budget, and a user stream slot
        with a rate-limit hit.  A refusal leaves nothing claimed and nothing counted."""
        owner = who.identity.sub
        request_id = req.request_id or new_request_id()
        key = stream_key(owner, request_id)
        if self._registry.get(key) is not None or key in self._starting:
            raise ProtocolError(
                ErrorCode.INVALID_PAYLOAD,
                "A request with this request_id is still in flight.",
                details=[{"field": "request_id", "message": "already in flight"}],
            )
        cfg = self.config
        starting = sum(1 for conn_id in self._starting.values() if conn_id == who.conn_id)
        if self._registry.count_for_connection(who.conn_id) + starting >= (
            cfg.max_streams_per_connection
        ):
            raise ProtocolError(
                ErrorCode.TOO_MANY_STREAMS,
                f"At most {cfg.max_streams_per_connection} streams per connection.",
            )
        self._starting[key] = who.conn_id  # counted as in flight from here
        ticket = Ticket(who, request_id, key, f"{key}:{secrets.token_hex(4)}")
        try:
            ticket.meter = await self._admit(who)
            entry = await self._streams.enter(owner, ticket.slot)
            if entry.full:
                raise ProtocolError(
                    ErrorCode.TOO_MANY_STREAMS,
                    f"At most {cfg.max_streams_per_user} streams per user.",
                )
            if entry.retry_after is not None:
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED, "Too many requests.", retry_after=entry.retry_after
                )
        except BaseException:
            del self._starting[key]
            raise
        return ticket

    async def _admit(self, who: Requester) -> Meter | None:
        """The budget before a request: refused while the day's budget is spent."""
        if self.budgets is None:
            return None
        try:
            return await self.budgets.admit(who.identity.sub, who.identity.budget)
        except BudgetExceeded as exc:
            raise ProtocolError(
                ErrorCode.BUDGET_EXCEEDED,
                "Your daily budget is spent.",
                retry_after=exc.retry_after,
            ) from None

    def settle(self, ticket: Ticket) -> None:
        """The pipeline runs the request now (its registry entry guards the id)."""
        if not ticket.settled:
            ticket.settled = True
            self._starting.pop(ticket.key, None)

    async def release(self, ticket: Ticket) -> None:
        """The request did not start after all: give its claims back."""
        self.settle(ticket)
        await self._streams.release(ticket.who.identity.sub, ticket.slot)

    async def finished(self, owner: str, slot: str) -> None:
        """A request ended: its user stream slot is free."""
        await self._streams.release(owner, slot)
