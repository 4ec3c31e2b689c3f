"""The README's configuration table, generated from the settings model.

``python -m server.settings_doc`` rewrites the table between the markers in README.md;
``--check`` exits 1 when it differs. A test fails when a setting has no meaning here or the
README's table drifts from ``Settings`` (names, order and defaults come from the model).
"""

from __future__ import annotations

import argparse
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from server.settings import Settings

BEGIN = "<!-- settings-table:begin (python -m server.settings_doc) -->"
END = "<!-- settings-table:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"

# One line per setting, in words; the name and the default come from the model.
MEANINGS: dict[str, str] = {
    "openrouter_api_key": "upstream API key (`OPENROUTER_SECRET` in `secrets.toml` works too); "
    "without it chat answers `upstream_auth`",
    "openrouter_base_url": "any OpenAI-compatible base URL (OpenRouter, Ollama, vLLM, LiteLLM…)",
    "openrouter_app_url": "sent as `HTTP-Referer` (OpenRouter app attribution)",
    "openrouter_app_title": "sent as `X-Title` (OpenRouter app attribution)",
    "default_model": "model when a request names none (`--demo`: the simulator's)",
    "allowed_models": "comma-separated allowlist; empty allows all (`--demo`: the simulator's)",
    "upstream_dialect": "`openrouter`, or `openai` for a plain OpenAI-compatible server "
    "(OpenRouter-only fields refused, usage via `stream_options`)",
    "upstream_connect_timeout_s": "upstream connect timeout → `upstream_timeout`",
    "upstream_first_token_timeout_s": "wait for the first upstream progress → `upstream_timeout`",
    "upstream_idle_timeout_s": "longest gap between upstream chunks → `upstream_timeout`",
    "upstream_total_timeout_s": "cap on one whole generation → `upstream_timeout`",
    "upstream_max_retries": "retries before the first token (429/502/503/connection errors)",
    "upstream_max_connections": "upstream connection pool size (0 = unbounded)",
    "jwt_secret": "HS256 key (at least 32 bytes); `--demo` makes an ephemeral one",
    "jwt_public_key": "RS256/ES256 verification key (PEM, certificate or file path)",
    "jwt_jwks_url": "identity provider's JWKS URL (keys fetched and cached)",
    "jwt_algorithms": "accepted algorithms, comma-separated; never `none`",
    "jwt_audience": "required `aud` when set",
    "jwt_issuer": "required `iss` when set",
    "jwt_leeway_s": "clock leeway for `exp`/`nbf`/`iat`",
    "jwt_jwks_min_refresh_s": "at most one JWKS fetch per this many seconds (unknown `kid`)",
    "jwt_jwks_cache_s": "refetch a key set older than this",
    "token_ttl_s": "lifetime of tokens from `POST /auth/token`",
    "guest_token_ttl_s": "lifetime of tokens from `POST /auth/guest`",
    "allow_anonymous": "guests without an account (`POST /auth/guest`; demo/dev only)",
    "users_file": "built-in accounts (bcrypt hashes) for `POST /auth/token`",
    "cors_origins": "allowed browser origins (HTTP, Socket.IO, raw WebSocket); empty = same origin",
    "trusted_proxies": "addresses whose `X-Forwarded-*` headers are believed",
    "login_rate_limit_per_minute": "failed logins per account per minute (5 times per address)",
    "redis_url": "turns on multi-node mode (rooms, presence, resume, limits across nodes)",
    "redis_key_prefix": "prefix of every Redis key and channel (one per deployment)",
    "redis_max_connections": (
        "a node's Redis connections for short commands; a call waits at most `REDIS_TIMEOUT_S`"
        " for a free one (`XREAD BLOCK` and pub/sub have their own)"
    ),
    "redis_timeout_s": "bound on every Redis call → `unavailable`; after a timeout calls "
    "fail at once until a trial call answers",
    "pubsub_flush_ms": "room events for other nodes gathered this long go to Redis as one "
    "`PUBLISH` (a stream's first and last event at once); 0 = no window, single messages "
    "only, as nodes before batching read them (during a rolling upgrade)",
    "node_lease_s": "a dead node's streams end with `server_shutdown` for room members and "
    "`resume` this long after its last heartbeat (at most 18)",
    "stream_log_flush_ms": "the resume log's writes of all streams of a node go to Redis "
    "together, gathered this long (a stream's first and last events never wait; 0 = at once)",
    "stream_log_lazy": "a private stream is logged only once its client drops or someone "
    "resumes it (ended: one value); a node killed meanwhile ends its resumes with "
    "`server_shutdown` and nothing of it replayed",
    "database_url": "durable store of the usage ledger and room history: "
    "`sqlite+aiosqlite:///path` or `postgresql+asyncpg://…` (several nodes)",
    "database_timeout_s": "bound on every database call; readiness `checks.database` degrades",
    "database_max_pending": "ledger rows and room messages waiting for the database; "
    "past this the oldest are dropped",
    "budget_tokens_per_day": "tokens (prompt + completion) per user and UTC day → "
    "`budget_exceeded` (0 = none; a JWT `budget` claim overrides)",
    "budget_cost_per_day": "USD per user and UTC day, as the upstream reports it → "
    "`budget_exceeded` (0 = none)",
    "max_payload_bytes": "largest `chat` payload → `payload_too_large`",
    "max_messages": "most messages in one request → `payload_too_large`",
    "max_message_chars": "longest message → `payload_too_large` (the page refuses it first)",
    "max_frame_bytes": "hard transport cap; only a frame above it closes the connection",
    "max_streams_per_connection": "concurrent answers per connection → `too_many_streams`",
    "max_streams_per_user": "concurrent answers per user, all nodes → `too_many_streams`",
    "rate_limit_per_minute": "accepted chats per user per rolling minute → `rate_limited`",
    "max_connections_per_user": "further connections of one user are refused",
    "max_rooms_per_connection": "further `join`s are `forbidden`",
    "resume_grace_s": "a dropped connection's answers keep running this long",
    "resume_retention_s": "a finished answer stays resumable this long",
    "room_history_limit": "messages kept per room and returned on `join`",
    "room_context_chars": "the room conversation sent to the model is trimmed to this",
    "token_coalesce_ms": "deltas within this window go out as one event (0 = off)",
    "token_coalesce_busy_ms": (
        "the window of a stream that sent 4 or more chunks within its last window (a fast"
        " model or a backlog); never shorter than `TOKEN_COALESCE_MS`, off with it"
    ),
    "room_history_max_age_s": "room messages older than this are dropped",
    "shutdown_grace_s": "on SIGTERM, streams may finish for this long",
    "send_timeout_s": "a client that drains nothing for this long has its transport aborted "
    "(its streams stay resumable)",
    "max_send_buffer_bytes": "a client with this much unsent has its transport aborted",
    "http_header_timeout_s": "request headers must arrive within this (slow-loris)",
    "http_body_timeout_s": "a request body must arrive within this, else 408 (slow-loris)",
    "connect_timeout_s": "an Engine.IO session must send its Socket.IO connect within this",
    "ping_interval_s": "Engine.IO heartbeat interval, announced in the handshake (whole seconds)",
    "ping_timeout_s": "a client whose pong has not come this long after a ping is dropped",
    "host": "bind address",
    "port": "port",
    "log_level": "`critical`, `error`, `warning`, `info` or `debug`",
    "log_format": "`text` or `json`",
    "demo": "demo mode (`--demo`): guests, the local model simulator, no key needed",
    "metrics_token": "when set, `GET /metrics` needs this bearer token",
    "prometheus_multiproc_dir": "several workers on one port report their sum (set in "
    "every worker's environment)",
    "metrics_refresh_s": "multiprocess mode: how often gauges are published",
    "tracing": "OpenTelemetry spans around upstream calls (configure an SDK)",
}


def default_text(name: str) -> str:
    field = Settings.model_fields[name]
    value: Any = field.get_default(call_default_factory=True)
    if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()):
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ", ".join(value) if value else "empty"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def table() -> str:
    missing = [name for name in Settings.model_fields if name not in MEANINGS]
    if missing:
        raise KeyError(f"settings without a meaning in server/settings_doc.py: {missing}")
    rows = ["| variable | meaning | default |", "|---|---|---|"]
    for name in Settings.model_fields:
        rows.append(f"| `{name.upper()}` | {MEANINGS[name]} | {default_text(name)} |")
    return "\n".join(rows)


def with_table(readme: str) -> str:
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[:start] + "\n" + table() + "\n" + readme[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.settings_doc", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md differs")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    current = args.readme.read_text(encoding="utf-8")
    wanted = with_table(current)
    if args.check:
        if wanted != current:
            print("README.md's configuration table is stale: python -m server.settings_doc")
            return 1
        return 0
    args.readme.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
