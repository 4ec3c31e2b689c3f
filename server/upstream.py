"""The one place the ``Upstream`` is chosen: the HTTP client or the demo simulator, traced or not.

``build_upstream`` is called once by ``create_app``; the pipeline and the model catalogue get
the same object, and the lifespan opens and closes it (``start()`` / ``aclose()``).
``check_models`` refuses settings whose default model the allowlist would refuse.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from server.security import ConfigError
from server.settings import Settings
from services.upstream.base import Dialect, Upstream
from services.upstream.client import UpstreamClient, UpstreamObserver, UpstreamSettings
from services.upstream.simulator import SIMULATOR_MODEL_IDS, Simulator
from services.upstream.tracing import TracedUpstream

__all__ = ["build_upstream", "check_models", "upstream_settings"]


def upstream_settings(settings: Settings) -> UpstreamSettings:
    s = settings
    return UpstreamSettings(
        base_url=s.openrouter_base_url,
        api_key=s.api_key,
        app_url=s.openrouter_app_url,
        app_title=s.openrouter_app_title,
        dialect=Dialect(s.upstream_dialect),
        connect_timeout_s=s.upstream_connect_timeout_s,
        first_token_timeout_s=s.upstream_first_token_timeout_s,
        idle_timeout_s=s.upstream_idle_timeout_s,
        total_timeout_s=s.upstream_total_timeout_s,
        max_retries=s.upstream_max_retries,
        max_connections=s.upstream_max_connections,
    )


def build_upstream(settings: Settings, observer: UpstreamObserver | None = None) -> Upstream:
    """The simulator in demo mode, else the HTTP client; wrapped in spans with ``TRACING``."""
    upstream: Upstream
    if settings.demo:
        upstream, address = Simulator(), "local-simulator"
    else:
        upstream = UpstreamClient(upstream_settings(settings), observer)
        address = urlsplit(settings.openrouter_base_url).hostname or ""
    if settings.tracing:
        upstream = TracedUpstream(upstream, server_address=address)
    return upstream


def check_models(settings: Settings) -> None:
    """``DEFAULT_MODEL`` must pass ``ALLOWED_MODELS``: a request without a model uses it."""
    allowed = settings.allowed_models
    if allowed and settings.default_model not in allowed:
        where = " (in demo mode, the simulator's models)" if settings.demo else ""
        raise ConfigError(
            f"DEFAULT_MODEL={settings.default_model} is not in ALLOWED_MODELS{where}: "
            f"{', '.join(allowed)}. Add it to ALLOWED_MODELS or set DEFAULT_MODEL to one of them."
        )
    if settings.demo and not set(allowed) <= set(SIMULATOR_MODEL_IDS):
        unknown = sorted(set(allowed) - set(SIMULATOR_MODEL_IDS))
        raise ConfigError(
            f"In demo mode only the simulator's models can answer; ALLOWED_MODELS names "
            f"{', '.join(unknown)}. Use some of {', '.join(SIMULATOR_MODEL_IDS)}."
        )
