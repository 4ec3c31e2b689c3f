"""Start-up and shutdown: the upstream (its HTTP session), the model list, draining streams.

Shutdown runs in this order (the fence's ``GracefulServer`` drives it on SIGTERM, before
uvicorn closes any connection): ``begin_shutdown`` (readiness 503, new connections and
requests refused with ``server_shutdown``), ``drain`` (streams in flight may finish for
``SHUTDOWN_GRACE_S``, the rest end with ``error server_shutdown``), ``close_clients``
(queued events reach the Socket.IO clients, then an Engine.IO close, so they reconnect
elsewhere), and finally ``stop`` from the lifespan (sessions and connections closed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI

from auth.tokens import TokenVerifier
from events.core.connections import Connections
from events.core.pipeline import ChatPipeline
from events.core.relay import Relay
from events.core.rooms import RoomEvents
from events.transport.socketio_events import SocketIOEvents
from server.metrics import RelayMetrics
from server.settings import Settings
from services.generations import GenerationRegistry, StopReason
from services.ledger import Ledger
from services.storage.streamlog import StreamLog
from services.upstream.base import Upstream
from services.upstream.catalogue import ModelCatalog

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Runtime:
    """Everything one app instance is made of."""

    settings: Settings
    sio: Any
    pipeline: ChatPipeline
    relay: Relay
    log: StreamLog
    registry: GenerationRegistry
    connections: Connections
    verifier: TokenVerifier
    sio_events: SocketIOEvents
    upstream: Upstream  # the pipeline's too (server/upstream.py builds it)
    redis: aioredis.Redis | None = None  # set by create_app when REDIS_URL is given
    rooms: RoomEvents | None = None
    metrics: RelayMetrics | None = None
    models: ModelCatalog | None = None  # GET /models; set by start()
    ledger: Ledger | None = None  # the durable store: usage ledger, room history
    shutting_down: bool = False
    hurried: bool = False  # a second signal: stop waiting for streams to finish
    extra_cleanup: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def upstream_configured(self) -> bool:
        return self.upstream.configured

    async def start(self) -> None:
        s = self.settings
        await self.upstream.start()  # opens its HTTP session
        if s.demo:
            logger.info("demo mode: answers come from the local simulator (no real model)")
        if self.metrics is not None:
            await self.metrics.start(s.metrics_refresh_s)
        if self.ledger is not None:
            await self.ledger.start()  # migrations run in the background
        await self.relay.start()
        self.sio.start_manager()
        if self.rooms is not None:
            await self.rooms.start()
        await self.verifier.start()  # loads the JWKS, when one is configured
        self.models = ModelCatalog(s.default_model, s.allowed_models, self.upstream.list_models)
        if not self.upstream.configured:
            logger.warning("OPENROUTER_API_KEY is not set: chats will fail with upstream_auth")

    def begin_shutdown(self) -> None:
        """Readiness turns 503; new connections and requests get ``server_shutdown``.

        Only sets flags, so it is safe to call from a signal handler.
        """
        self.shutting_down = True
        self.pipeline.stop_accepting()

    def hurry(self) -> None:
        """End the streams in flight now instead of waiting out the grace period."""
        self.hurried = True

    async def drain(self, grace_s: float) -> None:
        """Stop taking requests, let streams finish for ``grace_s``, then end the rest."""
        self.begin_shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        if len(self.registry):
            logger.info("draining %d stream(s) for up to %.1f s", len(self.registry), grace_s)
        while len(self.registry) and not self.hurried:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await self.registry.wait_idle(min(remaining, 0.1))
        left = self.registry.all()
        for gen in left:
            gen.stop(StopReason.SHUTDOWN)
        if left:
            logger.info("ended %d stream(s) with server_shutdown", len(left))
        await self.registry.wait_idle(5)

    async def close_clients(self, timeout_s: float = 2.0) -> None:
        """Deliver what is queued for each Socket.IO client, then close its Engine.IO socket.

        An Engine.IO close (not a Socket.IO disconnect) lets clients reconnect, to another
        node when there is one.  Raw WebSockets need nothing: their frames are written
        before a generation ends, and uvicorn closes them with 1012 (service restart).
        """
        eio = self.sio.eio
        if not eio.sockets:
            return
        # a client whose writes are already stuck would never take its close: cut it off now
        eio.cut_off_all("the server is stopping")
        try:
            await asyncio.wait_for(eio.disconnect(), timeout_s)
        except TimeoutError:
            logger.warning("some Socket.IO clients did not take their last events in time")
        eio.cut_off_all("the server is stopping")  # nor on one that stopped reading since
        await asyncio.sleep(0.1)  # let the transports' writer tasks put the bytes on the wire

    async def stop(self) -> None:
        await self.drain(self.settings.shutdown_grace_s)
        await self.sio_events.aclose()
        await self.relay.aclose()
        await self.log.aclose()
        if self.rooms is not None:
            await self.rooms.aclose()
        await self.sio.stop_manager()
        self.sio.eio.stop_watching()
        for cleanup in self.extra_cleanup:
            result = cleanup()
            if asyncio.iscoroutine(result):
                await result
        await self.upstream.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        if self.metrics is not None:
            await self.metrics.stop()


def lifespan_for(runtime: Runtime) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    return lifespan
