"""The one place that builds the app at import, for ``uvicorn server.main:app``."""

from events.transport.internals.uvicorn_config import adopt_serving_settings
from server.app import ConfigError, create_app
from server.logs import configure_logging
from server.serve import tune_gc
from server.settings import Settings

settings = Settings()
configure_logging(settings.log_level, settings.log_format, secrets=settings.secret_values())
try:
    app = create_app(settings)
except ConfigError as exc:  # a clear message, not a traceback, for a settings mistake
    raise SystemExit(f"configuration error: {exc}") from None
tune_gc()  # as `python -m server` does
# and its protocols and limits (header deadline, MAX_FRAME_BYTES, aborts, trusted proxies)
adopt_serving_settings(
    header_timeout_s=settings.http_header_timeout_s,
    max_frame_bytes=settings.max_frame_bytes,
    trusted_proxies=settings.trusted_proxies,
)
