"""Security parts built from settings: the token verifier and the per-user limits.

Both refuse settings that cannot work with a ``ConfigError`` whose message says what
to change (``python -m server`` prints it and exits with status 2).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from auth.jwks import JwksKeys
from auth.keys import MIN_HMAC_SECRET_BYTES, KeyConfigError, PublicKey, family_of, load_public_key
from auth.tokens import TokenVerifier
from health.checks import Check, CheckResult
from server.settings import Settings
from services.storage.limits import (
    ConnectionCounter,
    MemoryConnectionCounter,
    MemoryRateLimiter,
    MemorySlots,
    MemoryStreamGate,
    StreamGate,
)
from services.storage.logins import LoginThrottle, memory_login_throttle, redis_login_throttle
from services.storage.redis_limits import RedisSlots, RedisStreamGate

logger = logging.getLogger(__name__)


class ConfigError(Exception):
    """The settings cannot run a server; the message says what to change."""


def build_verifier(settings: Settings) -> TokenVerifier:
    """The token verifier the settings describe; ``ConfigError`` says what is wrong."""
    algorithms = settings.jwt_algorithms
    asymmetric = [alg for alg in algorithms if family_of(alg) != "HMAC"]
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    if secret is not None:
        # RFC 7518 §3.2: an HMAC key at least as long as the hash it is used with.
        needed = max(
            [MIN_HMAC_SECRET_BYTES]
            + [int(alg[2:]) // 8 for alg in algorithms if family_of(alg) == "HMAC"]
        )
        if len(secret.encode()) < needed:
            raise ConfigError(
                f"JWT_SECRET is too short: use at least {needed} random bytes "
                '(e.g. python -c "import secrets; print(secrets.token_urlsafe(64))").'
            )
    if secret is None and settings.allow_anonymous:
        # Demo/dev: guest tokens need a key; this one lives as long as the process.
        secret = secrets.token_urlsafe(32)
    public_key: PublicKey | None = None
    jwks: JwksKeys | None = None
    if settings.jwt_public_key and settings.jwt_jwks_url:
        raise ConfigError("Set JWT_PUBLIC_KEY or JWT_JWKS_URL, not both.")
    if settings.jwt_public_key:
        try:
            public_key = load_public_key(settings.jwt_public_key.get_secret_value())
        except KeyConfigError as exc:
            raise ConfigError(f"{exc}.") from None
        if not public_key.usable(algorithms):
            raise ConfigError(
                f"JWT_PUBLIC_KEY is an {public_key.family} key, but JWT_ALGORITHMS "
                f"({','.join(algorithms)}) names no algorithm for it: set JWT_ALGORITHMS, "
                f"e.g. to {_EXAMPLE_ALG[public_key.family]}."
            )
    if settings.jwt_jwks_url:
        if not asymmetric:
            raise ConfigError(
                f"JWT_JWKS_URL is set, but JWT_ALGORITHMS ({','.join(algorithms)}) names no "
                "asymmetric algorithm: set JWT_ALGORITHMS to the one your identity provider "
                "signs with, e.g. RS256."
            )
        url = urlsplit(settings.jwt_jwks_url)
        if url.scheme == "http" and url.hostname not in ("localhost", "127.0.0.1", "::1"):
            logger.warning("JWT_JWKS_URL uses plain http: anyone on the path can swap the keys")
        jwks = JwksKeys(
            settings.jwt_jwks_url,
            min_refresh_s=settings.jwt_jwks_min_refresh_s,
            max_age_s=settings.jwt_jwks_cache_s,
        )
    if (public_key or jwks) and settings.jwt_audience is None:
        logger.warning(
            "JWT_AUDIENCE is not set: tokens the identity provider issued for any "
            "audience are accepted"
        )
    verifier = TokenVerifier(
        secret=secret,
        public_key=public_key,
        jwks=jwks,
        algorithms=algorithms,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        leeway_s=settings.jwt_leeway_s,
    )
    if not verifier.can_verify and not settings.allow_anonymous:
        raise ConfigError(
            "No way to verify tokens, so no client could connect. Set JWT_SECRET "
            "(HS256, at least 32 bytes; also enables POST /auth/token), or "
            "JWT_PUBLIC_KEY or JWT_JWKS_URL with JWT_ALGORITHMS (e.g. RS256) for an "
            "identity provider's tokens; or start in demo mode (--demo / "
            "ALLOW_ANONYMOUS=true, anonymous access, development only)."
        )
    return verifier


_EXAMPLE_ALG = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA", "HMAC": "HS256"}


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-user limits: in memory, or shared by all nodes through Redis."""

    streams: StreamGate  # a chat request's stream slot and rate-limit count, taken together
    connections: ConnectionCounter
    logins: LoginThrottle  # failed POST /auth/token per account and per client address
    closers: tuple[Callable[[], Awaitable[None]], ...] = ()


def build_limits(settings: Settings, redis: aioredis.Redis | None) -> Limits:
    if redis is None:
        return Limits(
            streams=MemoryStreamGate(
                MemorySlots(settings.max_streams_per_user),
                MemoryRateLimiter(settings.rate_limit_per_minute),
            ),
            connections=MemoryConnectionCounter(settings.max_connections_per_user),
            logins=memory_login_throttle(settings.login_rate_limit_per_minute),
        )
    prefix = f"{settings.redis_key_prefix}limits"
    streams = RedisStreamGate(
        redis,
        streams=settings.max_streams_per_user,
        rate=settings.rate_limit_per_minute,
        prefix=prefix,
    )
    connections = RedisSlots(
        redis,
        settings.max_connections_per_user,
        prefix=f"{prefix}:conns",
        what="connection limits",
    )
    return Limits(
        streams=streams,
        connections=connections,
        logins=redis_login_throttle(
            redis, settings.login_rate_limit_per_minute, prefix=f"{prefix}:login:"
        ),
        closers=(streams.aclose, connections.aclose),
    )


def auth_checks(verifier: TokenVerifier) -> dict[str, Check]:
    """Readiness: with ``JWT_JWKS_URL``, not ready until the provider's keys are loaded.

    The check itself retries the fetch (at most once per ``JWT_JWKS_MIN_REFRESH_S``),
    so a node that started while the provider was down becomes ready on its own.
    """
    jwks = verifier.jwks
    if jwks is None:
        return {}

    async def check() -> CheckResult:
        if not jwks.loaded:
            await jwks.refresh()
        return CheckResult("ok", True) if jwks.loaded else CheckResult("keys_not_loaded", False)

    return {"jwks": check}
