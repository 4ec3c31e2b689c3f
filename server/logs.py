"""Logging set-up: text or JSON lines, with secrets redacted everywhere.

Configured once at start-up.  The redaction filter sits on the handlers, so it sees
every record: ours, uvicorn's access log (query strings such as ``?token=``), aiohttp's.
Fields passed as ``extra`` (and the request ids bound in ``services.log_context``) are
structured data: keys of the JSON object, or ``key=value`` pairs after a text line.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import IO, Any
from urllib.parse import unquote

import orjson

from services import log_context

_SECRET_PATTERNS = [
    # ?token=..., &access_token=...
    (re.compile(r"((?:^|[?&\s])(?:access_|refresh_|id_)?token=)[^&\s\"']+", re.I), r"\1[REDACTED]"),
    # "token": "…" / "password": "…" in JSON (Socket.IO frames in websockets' debug log)
    (
        re.compile(r"((?:token|password|secret)[\"']?\s*:\s*[\"'])[^\"']*", re.I),
        r"\1[REDACTED]",
    ),
    # Authorization / Cookie / Set-Cookie header values (e.g. uvicorn's debug header lines)
    (
        re.compile(r"((?:authorization|(?:set-)?cookie)[\"']?\s*[:=]\s*[\"']?)[^\r\n\"']+", re.I),
        r"\1[REDACTED]",
    ),
    # Authorization: Bearer xxx / "Bearer xxx"
    (re.compile(r"(bearer\s+)[A-Za-z0-9._~+/=-]+", re.I), r"\1[REDACTED]"),
    # bare JWTs
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), "[REDACTED-JWT]"),
    # OpenRouter / OpenAI style keys
    (re.compile(r"sk-[A-Za-z0-9_-]{8,}"), "[REDACTED-KEY]"),
]

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


def _percent_decoded(text: str) -> str:
    """``?%74oken=`` is ``?token=`` to a server: match what it decodes to (twice-encoded too)."""
    for _ in range(3):
        if "%" not in text:
            break
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def redact(text: str, extra_secrets: tuple[str, ...] = ()) -> str:
    text = _percent_decoded(text)
    for secret in extra_secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What was passed as ``extra`` (and bound ids): everything not standard on a record."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_")
    }


class RedactingFilter(logging.Filter):
    """Rewrites every record so secrets never reach a handler: message, extras, traceback."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in log_context.current():
            if not hasattr(record, key):
                setattr(record, key, value)
        try:
            message = record.getMessage()
        except Exception:
            return True
        record.msg = redact(message, self.secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = _PLAIN.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value, self.secrets))
        return True


_PLAIN = logging.Formatter()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, time, level, logger, msg, the extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(extra_fields(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` (logfmt-style extras)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        pairs = [
            f"{key}={_logfmt(value)}"
            for key, value in extra_fields(record).items()
            if value is not None
        ]
        return f"{line} {' '.join(pairs)}" if pairs else line


def _logfmt(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    if not text or any(c in text for c in ' "=\\'):
        return orjson.dumps(text).decode()
    return text


def configure_logging(
    level: str = "info",
    fmt: str = "text",
    secrets: tuple[str, ...] = (),
    stream: IO[str] | None = None,
) -> None:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(RedactingFilter(secrets))
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        # `uvicorn server.main:app` has set these to its --log-level (info); LOG_LEVEL rules
        # them as under `python -m server`, or every connection still logs two INFO lines
        lg.setLevel(logging.NOTSET)
