"""Running the app under uvicorn with the fast settings (uvloop, httptools)."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from server.app import ConfigError, create_app
from server.logs import configure_logging
from server.settings import Settings

logger = logging.getLogger(__name__)


def uvicorn_config(settings: Settings, app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="auto",
        http="auto",
        ws="websockets-sansio",
        ws_max_size=settings.max_frame_bytes,
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
        logger.error("configuration error: %s", exc)
        return 2
    server = uvicorn.Server(uvicorn_config(settings, app))
    server.run()
    return 0
