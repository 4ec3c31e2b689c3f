"""The composition root: ``create_app(settings)`` builds one isolated ASGI app.

Socket.IO (``/socket.io``) wraps FastAPI, which serves HTTP routes, the raw
WebSocket endpoint and the page.  Everything is built here from settings and passed
in; nothing is created at import time.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
import socketio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from auth.authenticator import Authenticator
from auth.origins import OriginPolicy
from events.connections import Connections
from events.pipeline import ChatPipeline, PipelineConfig
from events.relay import Relay
from events.sio_server import MemoryManager, RelayServer, TailRegistry
from events.socketio import SocketIOEvents
from events.websocket import WebSocketEndpoint
from health.checks import disabled_check, flag_check, upstream_check
from health.router import health_router
from server import __version__
from server.jsonshim import OrjsonShim
from server.lifecycle import Runtime, lifespan_for
from server.routes import auth_router, web_routes
from server.security import ConfigError, auth_checks, build_limits, build_verifier
from server.settings import Settings
from services.generations import GenerationRegistry
from services.streamlog import MemoryStreamLog

__all__ = ["ConfigError", "RelayApp", "build_verifier", "create_app"]


class RelayApp(socketio.ASGIApp):  # type: ignore[misc]
    """The ASGI app; ``runtime`` exposes the parts for tests and operators."""

    def __init__(self, sio: RelayServer, http: FastAPI, runtime: Runtime) -> None:
        super().__init__(sio, other_asgi_app=http, socketio_path="socket.io")
        self.runtime = runtime
        self.http = http


def create_app(settings: Settings) -> RelayApp:
    verifier = build_verifier(settings)
    redis = aioredis.from_url(settings.redis_url) if settings.redis_url else None
    limits = build_limits(settings, redis)
    authenticator = Authenticator(verifier, allow_anonymous=settings.allow_anonymous)
    origins = OriginPolicy(settings.cors_origins)
    log = MemoryStreamLog(retention_s=settings.resume_retention_s)
    registry = GenerationRegistry()
    pipeline = ChatPipeline(
        PipelineConfig(
            default_model=settings.default_model,
            allowed_models=frozenset(settings.allowed_models),
            max_payload_bytes=settings.max_payload_bytes,
            max_messages=settings.max_messages,
            max_message_chars=settings.max_message_chars,
            max_streams_per_connection=settings.max_streams_per_connection,
            max_streams_per_user=settings.max_streams_per_user,
        ),
        log=log,
        registry=registry,
        rate_limiter=limits.rate,
        streams=limits.streams,
    )
    relay = Relay(pipeline, log, registry, verifier, resume_grace_s=settings.resume_grace_s)
    connections = Connections()
    counter = limits.connections
    tails = TailRegistry()
    sio = RelayServer(
        async_mode="asgi",
        client_manager=MemoryManager(tails),
        cors_allowed_origins=origins.allows_environ,
        max_http_buffer_size=settings.max_frame_bytes,
        json=OrjsonShim,
        logger=False,
        engineio_logger=False,
    )

    def session_info() -> dict[str, Any]:
        return {
            "limits": {
                "max_payload_bytes": settings.max_payload_bytes,
                "max_messages": settings.max_messages,
                "max_message_chars": settings.max_message_chars,
                "max_streams_per_connection": settings.max_streams_per_connection,
                "rate_limit_per_minute": settings.rate_limit_per_minute,
            },
            "default_model": settings.default_model,
            "protocol": 1,
        }

    sio_events = SocketIOEvents(
        sio, relay, authenticator, connections, counter, tails, session_info
    )
    sio_events.register()
    ws_endpoint = WebSocketEndpoint(
        relay, authenticator, origins, connections, counter, settings.max_payload_bytes
    )
    runtime = Runtime(
        settings=settings,
        sio=sio,
        pipeline=pipeline,
        relay=relay,
        log=log,
        registry=registry,
        connections=connections,
        verifier=verifier,
        sio_events=sio_events,
        redis=redis,
    )
    runtime.extra_cleanup.extend([*limits.closers, verifier.aclose])

    http = FastAPI(
        title="llm-relay",
        version=__version__,
        description=(
            "HTTP side of the LLM chat relay. The Socket.IO event API is at "
            "[/asyncapi.json](/asyncapi.json)."
        ),
        lifespan=lifespan_for(runtime),
    )
    http.include_router(
        health_router(
            __version__,
            {
                "upstream": upstream_check(
                    configured=lambda: runtime.upstream_configured, demo=settings.demo
                ),
                "shutdown": flag_check("shutting_down", lambda: runtime.shutting_down),
                "redis": disabled_check,
                **auth_checks(verifier),
            },
        )
    )
    if settings.cors_origins:
        http.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    http.include_router(auth_router(settings, verifier, limits.logins))
    http.add_api_websocket_route("/websockets/openrouter", ws_endpoint)
    web_routes(http)
    return RelayApp(sio, http, runtime)
