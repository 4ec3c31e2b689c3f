"""An example extension: an ``echo`` Socket.IO event and a ``GET /echo`` HTTP route.

It shows every piece an extension has: a payload model (validated before the handler
runs), an acknowledgement model, a handler that raises a protocol error code, a
server→client event it sends (``echoed``), and an HTTP router.  Turn it on in
``server/extensions.py``::

    def installed(settings: Settings) -> list[Extension]:
        return [echo_extension()]

or in your own entry point: ``create_app(settings, extensions=[echo_extension()])``.
``/asyncapi.json``, ``/docs/events`` and ``/docs`` then describe it; its test is
``tests/integration/test_extension_echo.py``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from events.core.catalog import EventDoc
from events.core.errors import ErrorCode, ProtocolError
from events.core.extension import EventContext, client_event
from events.core.models import Inbound, Outbound, User
from server.extensions import Extension

# -- the Socket.IO event -----------------------------------------------------------------


class EchoRequest(Inbound):
    """``echo``: send text, get it back in the ack and as ``echoed`` events."""

    text: str = Field(min_length=1, max_length=1000, description="What to echo.")
    times: int = Field(1, ge=1, le=5, description="How many `echoed` events to send.")


class EchoAck(Outbound):
    """``echo`` succeeded."""

    ok: Literal[True] = True
    text: str
    user: User


class EchoedEvent(Outbound):
    """``echoed``: one echo of an ``echo`` request, to the sender only."""

    text: str
    n: int = Field(description="0, 1, … up to `times - 1`.")


@client_event(
    "echo",
    EchoRequest,
    EchoAck,
    summary="Echo text back (an example extension).",
    description="Signed-in users only: a guest gets `forbidden`.",
    errors=(ErrorCode.FORBIDDEN,),
    examples=({"text": "hello", "times": 2},),
    tags=("example",),
)
async def echo(ctx: EventContext, req: EchoRequest) -> EchoAck:
    if ctx.identity.sub.startswith("guest:"):
        raise ProtocolError(ErrorCode.FORBIDDEN, "Sign in to use echo.")
    for n in range(req.times):
        await ctx.emit("echoed", {"text": req.text, "n": n})
    return EchoAck(text=req.text, user=User(**ctx.identity.user))


ECHOED = EventDoc(
    "echoed",
    "server",
    EchoedEvent,
    "One echo of an `echo` request.",
    examples=({"text": "hello", "n": 0},),
    tags=("example",),
)

# -- the HTTP route ----------------------------------------------------------------------


class EchoResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"text": "hello"}]})

    text: str


def echo_router() -> APIRouter:
    router = APIRouter(prefix="/echo", tags=["example"])

    @router.get("", response_model=EchoResponse, summary="Echo text back (an example route)")
    async def echo_http(
        text: Annotated[str, Query(min_length=1, max_length=1000, examples=["hello"])],
    ) -> EchoResponse:
        return EchoResponse(text=text)

    return router


def echo_extension() -> Extension:
    return Extension("echo", events=[echo], emits=[ECHOED], routers=[echo_router()])
