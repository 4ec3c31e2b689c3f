"""Settings: one pydantic-settings class holding every name of PROTOCOL.md §5.

Read from the environment and from ``secrets.toml`` (the original template's
``OPENROUTER_SECRET`` key is accepted there).  Built once at start-up and passed
down as plain values; nothing else in the project reads ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from auth.keys import ALGORITHMS
from services.upstream.simulator import SIMULATOR_MODEL, SIMULATOR_MODEL_IDS

PROJECT_URL = "https://github.com/llm-relay/llm-relay"
PROJECT_NAME = "llm-relay"

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class _SecretsToml(TomlConfigSettingsSource):
    """``secrets.toml``, with the original template's ``OPENROUTER_SECRET`` alias."""

    def __call__(self) -> dict[str, Any]:
        data = {key.lower(): value for key, value in super().__call__().items()}
        secret = data.pop("openrouter_secret", None)
        if secret is not None and "openrouter_api_key" not in data:
            data["openrouter_api_key"] = secret
        return data


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        case_sensitive=False,
        extra="ignore",
        toml_file="secrets.toml",
        validate_default=True,
    )

    # upstream
    openrouter_api_key: SecretStr | None = None
    openrouter_base_url: str = "https://openrouter.ai/api/v1"
    openrouter_app_url: str = PROJECT_URL
    openrouter_app_title: str = PROJECT_NAME
    default_model: str = "openrouter/auto"  # must pass ALLOWED_MODELS (checked at start-up)
    allowed_models: CommaList = Field(default_factory=list)
    upstream_dialect: Literal["openrouter", "openai"] = "openrouter"
    upstream_connect_timeout_s: float = Field(10, gt=0)
    upstream_first_token_timeout_s: float = Field(60, gt=0)
    upstream_idle_timeout_s: float = Field(60, gt=0)
    upstream_total_timeout_s: float = Field(900, gt=0)
    upstream_max_retries: int = Field(2, ge=0, le=10)
    upstream_max_connections: int = Field(1000, ge=0)  # aiohttp's default 100 would queue chats

    # auth
    jwt_secret: SecretStr | None = None
    jwt_public_key: SecretStr | None = None
    jwt_jwks_url: str | None = None
    jwt_algorithms: CommaList = Field(default_factory=lambda: ["HS256"])
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_s: float = Field(5, ge=0, le=300)
    jwt_jwks_min_refresh_s: float = Field(30, ge=0)  # at most one JWKS fetch per interval
    jwt_jwks_cache_s: float = Field(3600, gt=0)  # refetch a key set older than this
    token_ttl_s: int = Field(3600, gt=0)
    guest_token_ttl_s: int = Field(3600, gt=0)
    allow_anonymous: bool = False
    users_file: Path = Path("users.toml")
    cors_origins: CommaList = Field(default_factory=list)
    trusted_proxies: CommaList = Field(default_factory=list)
    login_rate_limit_per_minute: int = Field(10, gt=0)  # failed POST /auth/token per account

    # multi-node
    redis_url: str | None = None
    redis_key_prefix: str = "llm-relay:"  # every Redis key and channel of ours starts with it
    redis_timeout_s: float = Field(2, gt=0)  # bound on every Redis call → `unavailable`
    # a node's connections for its short commands; a call waits at most REDIS_TIMEOUT_S
    # for a free one (blocking reads and pub/sub have connections of their own)
    redis_max_connections: int = Field(64, gt=0)
    # room events for other nodes gathered this long into one PUBLISH (0 = off)
    pubsub_flush_ms: float = Field(5, ge=0, le=60_000)
    # a node's lease in Redis: its streams count as orphaned (server_shutdown) this long
    # after its last heartbeat (invariant 6: within 20 s)
    node_lease_s: float = Field(12, gt=0, le=18)
    # the stream log's writer gathers the appends of all this node's streams this long and
    # sends them as one pipeline (a stream's first and terminal entries never wait)
    stream_log_flush_ms: float = Field(5, ge=0, le=100)
    # a private stream's events stay in its node's memory until its client drops or
    # someone resumes it (then they go to the log); room streams are always logged
    stream_log_lazy: bool = True

    # durable store (usage ledger, room history) and budgets
    database_url: str = "sqlite+aiosqlite:///./relay.db"
    database_timeout_s: float = Field(5, gt=0)  # bound on every database call
    database_max_pending: int = Field(100_000, gt=0)  # rows waiting to be written, then dropped
    budget_tokens_per_day: int = Field(0, ge=0)  # 0 = none
    budget_cost_per_day: float = Field(0, ge=0)  # USD; 0 = none

    # limits
    max_payload_bytes: int = Field(1_000_000, gt=0)
    max_messages: int = Field(500, gt=0)
    max_message_chars: int = Field(100_000, gt=0)
    max_frame_bytes: int = Field(16_777_216, gt=0)
    max_streams_per_connection: int = Field(4, gt=0)
    max_streams_per_user: int = Field(8, gt=0)
    rate_limit_per_minute: int = Field(60, gt=0)
    max_connections_per_user: int = Field(20, gt=0)
    max_rooms_per_connection: int = Field(50, gt=0)
    resume_grace_s: float = Field(30, ge=0)
    resume_retention_s: float = Field(120, ge=0)
    room_history_limit: int = Field(50, gt=0)
    room_context_chars: int = Field(200_000, gt=0)
    token_coalesce_ms: float = Field(20, ge=0, le=1000)  # 0 = one event per upstream read
    # the window of a stream the upstream sends faster (4+ chunks in its last window):
    # fewer, larger events (25 a second at 40 ms); never shorter than token_coalesce_ms
    token_coalesce_busy_ms: float = Field(40, ge=0, le=1000)
    room_history_max_age_s: float = Field(7 * 86_400, gt=0)
    shutdown_grace_s: float = Field(20, ge=0)
    # invariant 7: a connection that drains nothing for this long, or holds this much
    # unsent, is aborted
    send_timeout_s: float = Field(30, gt=0)
    max_send_buffer_bytes: int = Field(4_194_304, gt=0)
    http_header_timeout_s: float = Field(10, gt=0)  # slow-loris: request headers deadline
    http_body_timeout_s: float = Field(30, gt=0)  # slow-loris: a request body's deadline
    connect_timeout_s: float = Field(45, gt=0)  # Engine.IO session without a Socket.IO connect
    # Engine.IO heartbeat, sent in the handshake (python-engineio announces whole seconds)
    ping_interval_s: float = Field(25, gt=0)
    ping_timeout_s: float = Field(20, gt=0)

    # serving
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_format: Literal["text", "json"] = "text"
    demo: bool = False

    # observability
    metrics_token: SecretStr | None = None  # when set, GET /metrics needs this bearer token
    # prometheus-client's own variable: several workers sharing one port aggregate here
    prometheus_multiproc_dir: Path | None = None
    metrics_refresh_s: float = Field(5, gt=0)  # multiprocess mode: how often gauges publish
    tracing: bool = False  # OpenTelemetry spans around upstream calls (configure an SDK)

    @field_validator(
        "allowed_models", "jwt_algorithms", "cors_origins", "trusted_proxies", mode="before"
    )
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("log_level", "log_format", "upstream_dialect", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algs(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("JWT_ALGORITHMS must name at least one algorithm")
        if any(alg.lower() == "none" for alg in value):
            raise ValueError("JWT_ALGORITHMS must never contain 'none'")
        canonical = {alg.lower(): alg for alg in ALGORITHMS}
        unknown = [alg for alg in value if alg.lower() not in canonical]
        if unknown:
            raise ValueError(
                f"JWT_ALGORITHMS has unknown algorithms {unknown}; use some of "
                + ", ".join(ALGORITHMS)
            )
        return list(dict.fromkeys(canonical[alg.lower()] for alg in value))

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        from services.storage.db.engine import parse_url

        try:
            parse_url(value)
        except Exception as exc:
            raise ValueError(
                "DATABASE_URL must be sqlite+aiosqlite:///path or postgresql+asyncpg://…"
            ) from exc
        return value

    @field_validator("jwt_jwks_url")
    @classmethod
    def _http_jwks(cls, value: str | None) -> str | None:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("JWT_JWKS_URL must be an http(s) URL")
        return value or None

    @model_validator(mode="after")
    def _demo_implies_anonymous(self) -> Settings:
        if self.demo:
            self.allow_anonymous = True
            # The simulator answers for its own models only: list and allow exactly those.
            if "default_model" not in self.model_fields_set:
                self.default_model = SIMULATOR_MODEL
            if "allowed_models" not in self.model_fields_set:
                self.allowed_models = list(SIMULATOR_MODEL_IDS)
        return self

    @property
    def api_key(self) -> str | None:
        key = self.openrouter_api_key
        return key.get_secret_value() if key is not None and key.get_secret_value() else None

    def secret_values(self) -> tuple[str, ...]:
        """Values that must never be logged."""
        values = (self.openrouter_api_key, self.jwt_secret, self.metrics_token)
        found = [v.get_secret_value() for v in values if v and v.get_secret_value()]
        for url in (self.redis_url, self.database_url):
            password = urlsplit(url).password if url else None
            if password:
                found.append(password)
        return tuple(found)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _SecretsToml(settings_cls))
