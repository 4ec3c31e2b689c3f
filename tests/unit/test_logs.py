"""Secrets never reach a log handler (server/logs.py)."""

from __future__ import annotations

import io
import json
import logging

import jwt

from server.logs import JsonFormatter, RedactingFilter, configure_logging, redact

KEY = "sk-or-v1-0123456789abcdef"
TOKEN = jwt.encode({"sub": "alice"}, "k" * 32, algorithm="HS256")


def capture(
    fmt: logging.Formatter, secrets: tuple[str, ...] = ()
) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(secrets))
    handler.setFormatter(fmt)
    logger = logging.getLogger(f"test-logs-{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_redact_patterns() -> None:
    line = (
        f'127.0.0.1:5 - "WebSocket /websockets/openrouter?format=completion&token={TOKEN}" '
        f"authorization: Bearer {TOKEN} key {KEY} cookie: session=abc"
    )
    out = redact(line)
    assert TOKEN not in out
    assert KEY not in out
    assert "session=abc" not in out
    assert "format=completion&token=[REDACTED]" in out


def test_header_lines_are_redacted() -> None:
    for line in (
        "< authorization: Basic YWxpY2U6cGFzc3dvcmQ=",
        "< cookie: session=abc; other=def",
        "> set-cookie: session=abc; HttpOnly",
        "{'HTTP_AUTHORIZATION': 'Bearer x.y.z', 'HTTP_COOKIE': 'session=abc'}",
        """< TEXT '40{"token":"eyJhbGciOiJIUzI1NiIsInR...x.y.zU0ftIVP6jcD"}' [203 bytes]""",
        """< TEXT '421["refresh",{"access_token": "x.y.z..."}]'""",
    ):
        out = redact(line)
        assert "YWxpY2U6cGFzc3dvcmQ=" not in out
        assert "session=abc" not in out
        assert "x.y.z" not in out
        assert "[REDACTED]" in out


def test_access_log_style_arguments_are_redacted() -> None:
    logger, stream = capture(logging.Formatter("%(message)s"))
    logger.info(
        '%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", f"/x?access_token={TOKEN}", "1.1", 200
    )
    assert TOKEN not in stream.getvalue()
    assert "access_token=[REDACTED]" in stream.getvalue()


def test_tracebacks_and_extra_fields_are_redacted() -> None:
    for fmt in (logging.Formatter("%(message)s"), JsonFormatter()):
        logger, stream = capture(fmt, (KEY,))
        try:
            raise RuntimeError(f"upstream said no to {KEY} with {TOKEN}")
        except RuntimeError:
            logger.exception("failed", extra={"detail": f"Bearer {TOKEN}"})
        text = stream.getvalue()
        assert "RuntimeError" in text
        assert KEY not in text
        assert TOKEN not in text


def test_json_lines_stay_json() -> None:
    logger, stream = capture(JsonFormatter(), (KEY,))
    logger.info("calling upstream with %s", KEY, extra={"user_id": "alice"})
    record = json.loads(stream.getvalue())
    assert record["msg"] == "calling upstream with [REDACTED]"
    assert record["user_id"] == "alice"


def test_log_level_rules_uvicorns_loggers_whatever_the_start_command() -> None:
    """``uvicorn server.main:app`` configures its loggers at INFO before the app is imported;
    LOG_LEVEL=warning must still silence their per-connection lines."""
    import logging.config

    from uvicorn.config import LOGGING_CONFIG

    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    logging.config.dictConfig(LOGGING_CONFIG)  # what uvicorn's Config does first
    out = io.StringIO()
    try:
        configure_logging("warning", stream=out)
        logging.getLogger("uvicorn.error").info("connection open")
        logging.getLogger("uvicorn.access").info("GET / 200")
        logging.getLogger("uvicorn.error").warning("kept")
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
    assert "connection open" not in out.getvalue()
    assert "GET / 200" not in out.getvalue()
    assert "kept" in out.getvalue()
