"""Running the app under uvicorn: fast settings (uvloop, httptools) and a graceful stop.

``GracefulServer`` (events/transport/internals/uvicorn_server.py) drains the relay before
uvicorn closes any connection: on the first SIGTERM/SIGINT the runtime stops taking
connections and requests (readiness 503), streams in flight may finish for
``SHUTDOWN_GRACE_S``, the rest end with ``error server_shutdown``, the events reach the
clients, and only then does uvicorn close connections and run the lifespan shutdown.
A second signal skips the rest of the grace period; a third forces the exit.
"""

from __future__ import annotations

import functools
import gc
import logging
from typing import Any

import uvicorn

from events.transport.internals.uvicorn_http import HeaderTimeoutProtocol
from events.transport.internals.uvicorn_server import GracefulServer
from events.transport.internals.uvicorn_websocket import RelayWebSocketProtocol
from server.app import ConfigError, RelayApp, create_app
from server.logs import configure_logging
from server.settings import Settings

logger = logging.getLogger(__name__)

# Collect the young generation after 10,000 allocations (default 700): a pause stays near
# 1-2 ms and a stream's short-lived objects are mostly freed by reference counting before
# it runs; a full collection (which walks every live object) comes rarely.
GC_THRESHOLDS = (10_000, 50, 100)
# After the drain only plain HTTP requests can still be open; don't wait long for them.
AFTER_DRAIN_TIMEOUT_S = 3


def uvicorn_config(settings: Settings, app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="auto",
        http=functools.partial(  # type: ignore[arg-type]
            HeaderTimeoutProtocol, header_timeout_s=settings.http_header_timeout_s
        ),
        ws=RelayWebSocketProtocol,  # websockets-sansio with a lighter receive queue
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=False,  # tiny token frames: zlib costs CPU and ~300 KB a socket
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies or ["127.0.0.1"],
        log_config=None,
        access_log=True,
        timeout_graceful_shutdown=AFTER_DRAIN_TIMEOUT_S,
    )


def uvicorn_server(settings: Settings, app: RelayApp) -> GracefulServer:
    return GracefulServer(uvicorn_config(settings, app), app.runtime, settings.shutdown_grace_s)


def serve(settings: Settings) -> int:
    """``python -m server`` (and the container's start command) end up here."""
    configure_logging(settings.log_level, settings.log_format, secrets=settings.secret_values())
    try:
        app = create_app(settings)
    except ConfigError as exc:
        logger.error("configuration error: %s", exc)
        return 2
    server = uvicorn_server(settings, app)
    tune_gc()
    server.run()
    return 0


def tune_gc() -> None:
    """Keep the cyclic garbage collector out of the token path.

    Everything built at start-up (modules, models, the app) is frozen out of collection,
    so a full collection no longer walks it (one took ~100 ms with 200 streams), and
    collections come less often (``GC_THRESHOLDS``).  Used by ``python -m server`` and
    ``server.main`` (``uvicorn server.main:app``), not by tests' in-process servers.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
