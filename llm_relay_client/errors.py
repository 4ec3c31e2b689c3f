"""The one exception type of the client, carrying the protocol's error object."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Codes the server sends (PROTOCOL.md §4) that a different token could fix.
AUTH_CODES = frozenset({"unauthorized", "token_expired"})
# Codes of a failed upstream call (the model provider), as opposed to refusals by the relay.
UPSTREAM_CODES = frozenset(
    {
        "upstream_bad_request",
        "upstream_auth",
        "insufficient_credits",
        "moderation",
        "upstream_timeout",
        "upstream_rate_limited",
        "upstream_unavailable",
        "upstream_error",
    }
)

RETRYABLE_CODES = frozenset(
    {
        "rate_limited",
        "too_many_streams",
        "upstream_timeout",
        "upstream_rate_limited",
        "upstream_unavailable",
        "upstream_error",
        "server_shutdown",
        "internal",
        "connection_error",
        "timeout",
    }
)

# Codes the client itself raises (never sent by the server).
CONNECTION_ERROR = "connection_error"  # cannot reach the server, or lost it for good
TIMEOUT = "timeout"  # the server did not answer an acknowledged event in time
CLOSED = "closed"  # the client was closed while the request was open


class ChatError(Exception):
    """A refusal or failure: the protocol's ``{code, message, retryable, retry_after?}``.

    ``code`` is one of the server's codes (PROTOCOL.md §4) or one of the client's own:
    ``connection_error``, ``timeout``, ``closed``.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        details: list[dict[str, Any]] | None = None,
        request_id: str | None = None,
        last_seq: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.details = details
        self.request_id = request_id
        self.last_seq = last_seq  # an ``error`` event's: the request's last stream event

    @classmethod
    def from_wire(cls, data: Any, request_id: str | None = None) -> ChatError:
        """Build from an error object (an ack's ``error``, an ``error`` event, ``err.data``)."""
        obj: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
        code = obj.get("code")
        message = obj.get("message")
        retry_after = obj.get("retry_after")
        details = obj.get("details")
        rid = obj.get("request_id", request_id)
        last_seq = obj.get("last_seq")
        code = code if isinstance(code, str) else "internal"
        retryable = obj.get("retryable")
        return cls(
            code,
            message if isinstance(message, str) else "The server sent an unexpected error.",
            retryable=retryable if isinstance(retryable, bool) else code in RETRYABLE_CODES,
            retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
            details=details if isinstance(details, list) else None,
            request_id=rid if isinstance(rid, str) else None,
            last_seq=last_seq if type(last_seq) is int else None,
        )

    @property
    def is_auth(self) -> bool:
        return self.code in AUTH_CODES

    @property
    def is_upstream(self) -> bool:
        return self.code in UPSTREAM_CODES

    def to_dict(self) -> dict[str, Any]:
        """The protocol's error object (plus ``request_id`` when known)."""
        out: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        if self.details:
            out["details"] = self.details
        if self.request_id is not None:
            out["request_id"] = self.request_id
        if self.last_seq is not None:
            out["last_seq"] = self.last_seq
        return out

    def __reduce__(self) -> tuple[Any, ...]:  # keep pickling (e.g. across processes) working
        return (_rebuild, (self.to_dict(),))


def _rebuild(data: dict[str, Any]) -> ChatError:
    return ChatError.from_wire(data)
