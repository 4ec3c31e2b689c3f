"""Running the app under uvicorn with the fast settings (uvloop, httptools)."""

from __future__ import annotations

import gc
import logging
from typing import Any

import uvicorn

from server.app import ConfigError, create_app
from server.logs import configure_logging
from server.settings import Settings

logger = logging.getLogger(__name__)

# Collect the young generation after 10,000 allocations (default 700): a pause stays near
# 1-2 ms and a stream's short-lived objects are mostly freed by reference counting before
# it runs; a full collection (which walks every live object) comes rarely.
GC_THRESHOLDS = (10_000, 50, 100)


def uvicorn_config(settings: Settings, app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="auto",
        http="auto",
        ws="websockets-sansio",
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=False,  # tiny token frames: zlib costs CPU and ~300 KB a socket
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies or ["127.0.0.1"],
        log_config=None,
        access_log=True,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
    )


def serve(settings: Settings) -> int:
    configure_logging(settings.log_level, settings.log_format, secrets=settings.secret_values())
    try:
        app = create_app(settings)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    server = uvicorn.Server(uvicorn_config(settings, app))
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
