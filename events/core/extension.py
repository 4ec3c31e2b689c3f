"""Socket.IO events added by extensions: a payload model, a handler, documented errors.

An ``EventSpec`` is a catalog entry (``EventDoc``) that also carries its handler, so the
event cannot be served without being documented: the app factory registers the handler
and hands the same object to the AsyncAPI generator.  Build specs with ``client_event``::

    @client_event("echo", EchoRequest, EchoAck, summary="Echo text back.")
    async def echo(ctx: EventContext, req: EchoRequest) -> EchoAck: ...

A handler gets the validated payload (a refused one is answered ``invalid_payload`` with
field details before it runs) and returns its success acknowledgement; raising
``ProtocolError(code, message)`` answers ``{ok: false, error}``.  Any other exception is
``internal`` (logged, never shown).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from auth.tokens import Identity
from events.core.admission import parse
from events.core.catalog import EventDoc
from events.core.errors import ErrorCode
from events.core.models import Inbound
from events.core.pipeline import Payload

Emit = Callable[[str, Payload], Awaitable[None]]
M = TypeVar("M", bound=Inbound)


@dataclass(frozen=True, slots=True)
class EventContext:
    """Who sent the event, and a way to send events back to that connection."""

    identity: Identity
    conn_id: str
    emit: Emit


Handler = Callable[[EventContext, Any], Awaitable[BaseModel | Payload]]


@dataclass(frozen=True)
class EventSpec(EventDoc):
    handler: Handler = field(kw_only=True)

    async def invoke(self, ctx: EventContext, data: Any) -> Payload:
        """Validate ``data``, run the handler, return the success acknowledgement."""
        request = parse(self.payload, data)  # type: ignore[type-var]  # checked in client_event
        result = await self.handler(ctx, request)
        ack = result.model_dump(mode="json") if isinstance(result, BaseModel) else dict(result)
        ack.setdefault("ok", True)
        return ack


def client_event(
    name: str,
    payload: type[M],
    ack: type[BaseModel],
    *,
    summary: str,
    description: str = "",
    errors: tuple[ErrorCode, ...] = (),
    examples: tuple[dict[str, Any], ...] = (),
    tags: tuple[str, ...] = (),
) -> Callable[[Callable[[EventContext, M], Awaitable[BaseModel | Payload]]], EventSpec]:
    """Describe a client→server event and attach its handler (no registration happens)."""
    if not issubclass(payload, Inbound):
        raise TypeError("an event payload model must derive from events.core.models.Inbound")

    def wrap(handler: Callable[[EventContext, M], Awaitable[BaseModel | Payload]]) -> EventSpec:
        return EventSpec(
            name,
            "client",
            payload,
            summary,
            description,
            acks=(ack,),
            errors=(
                ErrorCode.INVALID_PAYLOAD,
                *(e for e in errors if e.value != "invalid_payload"),
            ),
            examples=examples,
            tags=tags,
            handler=handler,
        )

    return wrap
