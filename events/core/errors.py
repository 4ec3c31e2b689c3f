"""The wire error codes (PROTOCOL.md §4) and the one mapping from exceptions to them."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from services.storage import UNAVAILABLE_ERRORS
from services.upstream.base import UpstreamError, UpstreamFailure

logger = logging.getLogger(__name__)


class ErrorCode(StrEnum):
    UNAUTHORIZED = "unauthorized"
    TOKEN_EXPIRED = "token_expired"
    FORBIDDEN = "forbidden"
    INVALID_PAYLOAD = "invalid_payload"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_STREAMS = "too_many_streams"
    NOT_FOUND = "not_found"
    UPSTREAM_BAD_REQUEST = "upstream_bad_request"
    UPSTREAM_AUTH = "upstream_auth"
    INSUFFICIENT_CREDITS = "insufficient_credits"
    MODERATION = "moderation"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_RATE_LIMITED = "upstream_rate_limited"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_ERROR = "upstream_error"
    SERVER_SHUTDOWN = "server_shutdown"
    UNAVAILABLE = "unavailable"
    BUDGET_EXCEEDED = "budget_exceeded"
    INTERNAL = "internal"


RETRYABLE: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.RATE_LIMITED,
        ErrorCode.TOO_MANY_STREAMS,
        ErrorCode.UPSTREAM_TIMEOUT,
        ErrorCode.UPSTREAM_RATE_LIMITED,
        ErrorCode.UPSTREAM_UNAVAILABLE,
        ErrorCode.UPSTREAM_ERROR,
        ErrorCode.SERVER_SHUTDOWN,
        ErrorCode.UNAVAILABLE,
        ErrorCode.BUDGET_EXCEEDED,
        ErrorCode.INTERNAL,
    }
)

DESCRIPTIONS: dict[ErrorCode, str] = {
    ErrorCode.UNAUTHORIZED: "No token, or the token is invalid.",
    ErrorCode.TOKEN_EXPIRED: "The token is past its exp; refresh it.",
    ErrorCode.FORBIDDEN: "Not allowed (room, model, resume of another's stream).",
    ErrorCode.INVALID_PAYLOAD: "The payload fails validation; details lists the fields.",
    ErrorCode.PAYLOAD_TOO_LARGE: "The payload is over the size limits.",
    ErrorCode.MODEL_NOT_ALLOWED: "The model is not in the allowlist.",
    ErrorCode.RATE_LIMITED: "Per-user request rate exceeded; see retry_after.",
    ErrorCode.TOO_MANY_STREAMS: "Concurrent stream limit reached.",
    ErrorCode.NOT_FOUND: "Unknown request_id or room.",
    ErrorCode.UPSTREAM_BAD_REQUEST: "The upstream refused the request (HTTP 400).",
    ErrorCode.UPSTREAM_AUTH: "The server's upstream API key is missing or refused (HTTP 401).",
    ErrorCode.INSUFFICIENT_CREDITS: "The upstream account has no credits left (HTTP 402).",
    ErrorCode.MODERATION: "The upstream's moderation refused the input (HTTP 403).",
    ErrorCode.UPSTREAM_TIMEOUT: "The upstream timed out.",
    ErrorCode.UPSTREAM_RATE_LIMITED: "The upstream rate-limited us after retries; see retry_after.",
    ErrorCode.UPSTREAM_UNAVAILABLE: "The upstream is unavailable after retries.",
    ErrorCode.UPSTREAM_ERROR: "The upstream stream failed or ended without finishing.",
    ErrorCode.SERVER_SHUTDOWN: "The server is stopping, or the node running the stream is gone.",
    ErrorCode.UNAVAILABLE: "A dependency (Redis) did not answer within REDIS_TIMEOUT_S; retry.",
    ErrorCode.BUDGET_EXCEEDED: "The daily token or cost budget is spent; see retry_after.",
    ErrorCode.INTERNAL: "An internal error; the message says nothing internal.",
}

_UPSTREAM_CODES: dict[UpstreamFailure, ErrorCode] = {
    UpstreamFailure.BAD_REQUEST: ErrorCode.UPSTREAM_BAD_REQUEST,
    UpstreamFailure.AUTH: ErrorCode.UPSTREAM_AUTH,
    UpstreamFailure.PAYMENT: ErrorCode.INSUFFICIENT_CREDITS,
    UpstreamFailure.MODERATION: ErrorCode.MODERATION,
    UpstreamFailure.TIMEOUT: ErrorCode.UPSTREAM_TIMEOUT,
    UpstreamFailure.RATE_LIMITED: ErrorCode.UPSTREAM_RATE_LIMITED,
    UpstreamFailure.UNAVAILABLE: ErrorCode.UPSTREAM_UNAVAILABLE,
    UpstreamFailure.STREAM: ErrorCode.UPSTREAM_ERROR,
}

INTERNAL_MESSAGE = "Internal server error."
UNAVAILABLE_MESSAGE = "The service's storage did not answer in time; try again shortly."


class ProtocolError(Exception):
    """A refusal or failure that reaches the client as an error object."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        retry_after: float | None = None,
        details: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.details = details

    def to_wire(self) -> dict[str, Any]:
        """The error object: ``{code, message, retryable, retry_after?, details?}``."""
        out: dict[str, Any] = {
            "code": self.code.value,
            "message": self.message,
            "retryable": self.code in RETRYABLE,
        }
        if self.retry_after is not None:
            out["retry_after"] = round(self.retry_after, 3)
        if self.details:
            out["details"] = self.details
        return out


def to_protocol_error(exc: BaseException) -> ProtocolError:
    """Map any exception to the error a client sees; unknown ones become ``internal``."""
    if isinstance(exc, ProtocolError):
        return exc
    if isinstance(exc, UpstreamError):
        code = _UPSTREAM_CODES.get(exc.kind, ErrorCode.UPSTREAM_ERROR)
        retry_after = exc.retry_after
        if code is ErrorCode.UPSTREAM_RATE_LIMITED and retry_after is None:
            retry_after = 1.0
        return ProtocolError(code, exc.message, retry_after=retry_after)
    if isinstance(exc, UNAVAILABLE_ERRORS):
        logger.warning("storage unavailable: %s", type(exc).__name__)
        return ProtocolError(ErrorCode.UNAVAILABLE, UNAVAILABLE_MESSAGE)
    logger.error("unexpected error", exc_info=exc)
    return ProtocolError(ErrorCode.INTERNAL, INTERNAL_MESSAGE)
