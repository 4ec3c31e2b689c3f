"""Upstream failures: the server's own sentences for clients, the upstream's text for the log.

A client only ever sees one fixed sentence per ``UpstreamFailure``; what the upstream said
(an error body, an in-stream error, a gateway's traceback) goes to the log at warning level,
cut short, on one line, with the API key replaced by ``***``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from services.upstream.base import UpstreamError, UpstreamFailure

logger = logging.getLogger("services.upstream.client")

DETAIL_LIMIT = 300
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
STREAM_RETRY_STATUSES = frozenset({429, 502, 503})  # an in-stream error before any progress

TEXT = {
    UpstreamFailure.BAD_REQUEST: "The model provider rejected the request.",
    UpstreamFailure.AUTH: "The model provider rejected the server's API key.",
    UpstreamFailure.PAYMENT: "The model provider account has insufficient credits.",
    UpstreamFailure.MODERATION: "The model provider flagged the input.",
    UpstreamFailure.TIMEOUT: "The model provider did not answer in time.",
    UpstreamFailure.RATE_LIMITED: "The model provider is rate limiting requests.",
    UpstreamFailure.UNAVAILABLE: "The model provider is unavailable.",
    UpstreamFailure.STREAM: "The model provider's stream failed.",
}
_STATUS_KIND = {
    400: UpstreamFailure.BAD_REQUEST,
    401: UpstreamFailure.AUTH,
    402: UpstreamFailure.PAYMENT,
    403: UpstreamFailure.MODERATION,
    408: UpstreamFailure.TIMEOUT,
    429: UpstreamFailure.RATE_LIMITED,
}


class Retryable(Exception):
    """A failure before anything was yielded that another attempt may fix."""

    def __init__(self, error: UpstreamError, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


def failure(
    kind: UpstreamFailure, *, status: int | None = None, retry_after: float | None = None
) -> UpstreamError:
    return UpstreamError(kind, TEXT[kind], status=status, retry_after=retry_after)


def kind_for_status(status: int) -> UpstreamFailure:
    other = UpstreamFailure.BAD_REQUEST if 400 <= status < 500 else UpstreamFailure.UNAVAILABLE
    return _STATUS_KIND.get(status, other)


def log_detail(what: str, detail: str | None, secret: str | None) -> None:
    """Log what the upstream said (``what``: e.g. ``HTTP 502``), redacted and cut short."""
    if not detail:
        logger.warning("upstream %s", what)
        return
    if secret:
        detail = detail.replace(secret, "***")
    logger.warning("upstream %s: %r", what, detail[:DETAIL_LIMIT])


def error_detail(obj: object) -> str | None:
    """`error.message` (or a bare `error` string) of an upstream JSON object."""
    if not isinstance(obj, dict):
        return None
    error = obj.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    return error if isinstance(error, str) else None


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
