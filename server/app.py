"""The composition root: ``create_app(settings)`` builds one isolated ASGI app.

Socket.IO (``/socket.io``) wraps FastAPI, which serves HTTP routes, the raw
WebSocket endpoint and the page.  Everything is built here from settings and passed
in; nothing is created at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import socketio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from auth.authenticator import Authenticator
from auth.origins import OriginPolicy
from events.core.admission import Admission, PipelineConfig
from events.core.catalog import CORE_EVENTS
from events.core.connections import Connections
from events.core.errors import ErrorCode
from events.core.pipeline import ChatPipeline
from events.core.pseudonym import UserPseudonym
from events.core.relay import Relay
from events.core.rooms import RoomEvents
from events.core.tails import TailRegistry
from events.transport.internals.socketio_managers import MemoryManager, RedisManager
from events.transport.internals.socketio_server import RelayServer
from events.transport.socketio_events import SocketIOEvents
from events.transport.websocket import WebSocketEndpoint
from health.checks import (
    database_check,
    disabled_check,
    flag_check,
    redis_check,
    upstream_check,
)
from health.router import health_router
from server import __version__
from server.apidocs import HTTP_DESCRIPTION, OPENAPI_TAGS, event_docs_router, swagger_router
from server.body_deadline import BodyDeadline
from server.extensions import Extension, documented_events, installed
from server.jsonshim import OrjsonShim
from server.ledger_hook import LedgerObserver
from server.lifecycle import Runtime, lifespan_for
from server.metrics import RelayMetrics, metrics_router, multiprocess_active
from server.nodes import build_budgets, resume_parts, watch_remote_streams
from server.routes import auth_router, client_router, web_routes
from server.security import ConfigError, auth_checks, build_limits, build_verifier
from server.settings import Settings
from server.upstream import build_upstream, check_models
from server.usage_routes import usage_router
from services.generations import GenerationRegistry
from services.ledger import Ledger
from services.storage.durable_rooms import DurableRoomStore, RedisRestoreLock
from services.storage.redis_client import Breaker, redis_client
from services.storage.redis_rooms import RedisRoomStore
from services.storage.redis_streamlog import RedisStreamLog
from services.storage.rooms import MemoryRoomStore, RoomStore

__all__ = ["ConfigError", "RelayApp", "build_verifier", "create_app"]


class RelayApp(socketio.ASGIApp):  # type: ignore[misc]
    """The ASGI app; ``runtime`` exposes the parts for tests and operators."""

    def __init__(self, sio: RelayServer, http: FastAPI, runtime: Runtime) -> None:
        super().__init__(sio, other_asgi_app=http, socketio_path="socket.io")
        self.runtime = runtime
        self.http = http


def build_metrics(settings: Settings) -> RelayMetrics:
    directory = settings.prometheus_multiproc_dir
    if (directory is not None) != multiprocess_active():
        raise ConfigError(
            "PROMETHEUS_MULTIPROC_DIR must be set in the environment of every worker process "
            "before it starts (not only in secrets.toml)."
        )
    if directory is not None and not directory.is_dir():
        raise ConfigError(f"PROMETHEUS_MULTIPROC_DIR={directory} is not a directory.")
    return RelayMetrics(__version__, multiprocess_dir=directory)


def counting_refusals(
    allows: Callable[[str | None, Mapping[str, Any]], bool], metrics: RelayMetrics
) -> Callable[[str | None, Mapping[str, Any]], bool]:
    """The Socket.IO origin check, counting refused handshakes as ``forbidden``."""

    def check(origin: str | None, environ: Mapping[str, Any]) -> bool:
        if allows(origin, environ):
            return True
        metrics.refused("socketio", ErrorCode.FORBIDDEN.value)
        return False

    return check


def pseudonym_secret(settings: Settings) -> str:
    """The key of the ``user`` pseudonym sent upstream; every node of a deployment shares it:
    ``JWT_SECRET`` when set, else the upstream API key, else a fixed text (a deployment
    with neither cannot reach the upstream anyway)."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    return settings.api_key or "llm-relay user pseudonym"


def create_app(settings: Settings, extensions: Sequence[Extension] | None = None) -> RelayApp:
    """Build one app.  ``extensions``: extra events and routes (default: ``installed()``)."""
    if extensions is None:
        extensions = installed(settings)
    docs_router = event_docs_router(  # refuses an extension event named like another event
        [*CORE_EVENTS, *documented_events(extensions)], title="llm-relay", version=__version__
    )
    check_models(settings)
    metrics = build_metrics(settings)
    upstream = build_upstream(settings, metrics)
    verifier = build_verifier(settings)
    breaker = Breaker(settings.redis_timeout_s)
    redis = (
        redis_client(
            settings.redis_url,
            timeout_s=settings.redis_timeout_s,
            breaker=breaker,
            max_connections=settings.redis_max_connections,
        )
        if settings.redis_url
        else None
    )
    limits = build_limits(settings, redis)
    authenticator = Authenticator(verifier, allow_anonymous=settings.allow_anonymous)
    origins = OriginPolicy(settings.cors_origins)
    log, bus = resume_parts(settings, redis, breaker)
    registry = GenerationRegistry()
    ledger = Ledger(
        settings.database_url,
        timeout_s=settings.database_timeout_s,
        max_pending=settings.database_max_pending,
    )
    config = PipelineConfig(
        default_model=settings.default_model,
        allowed_models=frozenset(settings.allowed_models),
        max_payload_bytes=settings.max_payload_bytes,
        max_messages=settings.max_messages,
        max_message_chars=settings.max_message_chars,
        max_streams_per_connection=settings.max_streams_per_connection,
        max_streams_per_user=settings.max_streams_per_user,
        token_coalesce_s=settings.token_coalesce_ms / 1000,
        token_coalesce_busy_s=settings.token_coalesce_busy_ms / 1000,
        dialect=settings.upstream_dialect,
    )
    budgets = build_budgets(settings, redis, ledger)
    admission = Admission(
        config,
        registry=registry,
        streams=limits.streams,
        pseudonym=UserPseudonym(pseudonym_secret(settings)),
        budgets=budgets,
    )
    pipeline = ChatPipeline(
        config,
        upstream,
        log=log,
        registry=registry,
        admission=admission,
        observer=LedgerObserver(ledger, metrics),
    )
    relay = Relay(
        pipeline,
        admission,
        log,
        registry,
        verifier,
        resume_grace_s=settings.resume_grace_s,
        observer=metrics,
        bus=bus,
    )
    connections = Connections()
    metrics.watch(connections, registry)
    metrics.watch_ledger(ledger.backlog)
    counter = limits.connections
    tails = TailRegistry()
    manager: MemoryManager | RedisManager = (
        RedisManager(
            settings.redis_url,
            tails,
            channel=settings.redis_key_prefix + "socketio",
            timeout_s=settings.redis_timeout_s,
            breaker=breaker,
            flush_s=settings.pubsub_flush_ms / 1000,
        )
        if settings.redis_url
        else MemoryManager(tails)
    )
    sio = RelayServer(
        connect_timeout_s=settings.connect_timeout_s,
        send_timeout_s=settings.send_timeout_s,
        max_send_buffer_bytes=settings.max_send_buffer_bytes,
        ping_interval=settings.ping_interval_s,
        ping_timeout=settings.ping_timeout_s,
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins=counting_refusals(origins.allows_environ, metrics),
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
            "protocol": 2,
        }

    live_rooms: RoomStore = (
        RedisRoomStore(
            redis,
            prefix=settings.redis_key_prefix,
            history_limit=settings.room_history_limit,
            max_age_s=settings.room_history_max_age_s,
        )
        if redis is not None
        else MemoryRoomStore(
            history_limit=settings.room_history_limit,
            max_age_s=settings.room_history_max_age_s,
        )
    )
    room_store = DurableRoomStore(
        live_rooms,
        ledger,
        history_limit=settings.room_history_limit,
        max_age_s=settings.room_history_max_age_s,
        lock=RedisRestoreLock(redis, prefix=settings.redis_key_prefix) if redis else None,
    )
    rooms = RoomEvents(
        sio,
        room_store,
        connections,
        max_rooms_per_connection=settings.max_rooms_per_connection,
        context_chars=settings.room_context_chars,
        default_model=settings.default_model,
        log=log,
    )
    relay.room_hook = rooms.chat_hook
    if isinstance(manager, RedisManager) and isinstance(log, RedisStreamLog):
        orphans = watch_remote_streams(sio, manager, log, tails)
        runtime_cleanup: list[Callable[[], Any]] = [orphans.aclose]
    else:
        runtime_cleanup = []
    sio_events = SocketIOEvents(
        sio, relay, authenticator, connections, counter, tails, session_info, rooms
    )
    sio_events.register()
    for extension in extensions:
        for spec in extension.events:
            sio_events.add_event(spec)
    ws_endpoint = WebSocketEndpoint(
        relay,
        authenticator,
        origins,
        connections,
        counter,
        settings.max_payload_bytes,
        max_frame_bytes=settings.max_frame_bytes,
        send_timeout_s=settings.send_timeout_s,
        max_send_buffer_bytes=settings.max_send_buffer_bytes,
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
        upstream=upstream,
        redis=redis,
        rooms=rooms,
        metrics=metrics,
        ledger=ledger,
    )
    runtime.extra_cleanup.extend(
        [*limits.closers, verifier.aclose, ledger.aclose, *runtime_cleanup]
    )

    http = FastAPI(
        title="llm-relay",
        version=__version__,
        description=HTTP_DESCRIPTION,
        lifespan=lifespan_for(runtime),
        openapi_tags=OPENAPI_TAGS,
        docs_url=None,  # our own /docs: Swagger UI from vendored files (works offline)
        redoc_url=None,
    )
    http.include_router(
        health_router(
            __version__,
            {
                "upstream": upstream_check(
                    configured=lambda: runtime.upstream_configured, demo=settings.demo
                ),
                "shutdown": flag_check("shutting_down", lambda: runtime.shutting_down),
                "redis": disabled_check
                if redis is None or not isinstance(manager, RedisManager)
                else redis_check(
                    redis.ping, lambda: manager.relaying, timeout_s=settings.redis_timeout_s
                ),
                "database": database_check(ledger.healthy),
                **auth_checks(verifier),
            },
        )
    )
    http.add_middleware(BodyDeadline, timeout_s=settings.http_body_timeout_s)
    if settings.cors_origins:
        http.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    http.include_router(auth_router(settings, verifier, limits.logins))
    http.include_router(client_router(settings, verifier, lambda: runtime.models))
    metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    http.include_router(metrics_router(metrics, metrics_token))
    http.include_router(usage_router(verifier, ledger, budgets, settings.users_file))
    http.include_router(docs_router)
    http.include_router(swagger_router())
    http.add_api_websocket_route("/websockets/openrouter", ws_endpoint)
    for extension in extensions:
        for router in extension.routers:
            http.include_router(router)
    web_routes(http)
    return RelayApp(sio, http, runtime)
