"""JWT verification and minting (PyJWT).  The only I/O is the JWKS fetch in ``auth.jwks``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt

from auth.jwks import JwksKeys
from auth.keys import PublicKey, family_of

AuthCode = Literal["unauthorized", "token_expired"]

MAX_TOKEN_CHARS = 16_384
MAX_SUB_CHARS = 256


class AuthError(Exception):
    """A token was refused; ``code`` is the wire code, ``message`` safe to show."""

    def __init__(self, code: AuthCode, message: str) -> None:
        super().__init__(message)
        self.code: AuthCode = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is on a connection: ``sub`` is the user id."""

    sub: str
    name: str
    exp: float | None
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def user(self) -> dict[str, str]:
        return {"id": self.sub, "name": self.name}

    @property
    def budget(self) -> Mapping[str, Any] | None:
        """The ``budget`` claim ``{tokens_per_day?, cost_per_day?}``: this user's daily budget."""
        value = self.claims.get("budget")
        return value if isinstance(value, Mapping) else None

    @property
    def roles(self) -> frozenset[str]:
        """The ``roles`` claim (a list of strings, or one string)."""
        value = self.claims.get("roles")
        if isinstance(value, str):
            return frozenset([value])
        if isinstance(value, list):
            return frozenset(v for v in value if isinstance(v, str))
        return frozenset()

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


def identity_from_claims(claims: Mapping[str, Any]) -> Identity:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError("unauthorized", "The token has no subject.")
    if len(sub) > MAX_SUB_CHARS:
        raise AuthError("unauthorized", "The token's subject is too long.")
    name = claims.get("name") or claims.get("preferred_username") or sub
    exp = claims.get("exp")
    return Identity(
        sub=sub,
        name=str(name)[:128],
        exp=float(exp) if isinstance(exp, int | float) else None,
        claims=dict(claims),
    )


class TokenVerifier:
    """Verifies bearer tokens against an explicit algorithm allowlist.

    The token's ``alg`` picks the key: HMAC algorithms verify only with the shared
    secret, asymmetric ones only with the static public key or the JWKS, and only with
    a key of the algorithm's own family (no HS/RS confusion); ``none`` is never
    accepted.  ``exp`` and ``sub`` are required; ``nbf``/``iat`` are checked with a small
    leeway; ``aud``/``iss`` when configured.
    """

    def __init__(
        self,
        *,
        secret: str | None,
        public_key: PublicKey | None = None,
        jwks: JwksKeys | None = None,
        algorithms: Sequence[str] = ("HS256",),
        audience: str | None = None,
        issuer: str | None = None,
        leeway_s: float = 5.0,
    ) -> None:
        algs = [alg for alg in algorithms if family_of(alg) is not None]
        self._hmac_algs = frozenset(a for a in algs if family_of(a) == "HMAC" and secret)
        self._static_algs = frozenset(public_key.usable(algs) if public_key else ())
        self._jwks_algs = frozenset(a for a in algs if family_of(a) != "HMAC" and jwks)
        self._secret = secret
        self._public_key = public_key
        self.jwks = jwks
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway_s

    @property
    def can_verify(self) -> bool:
        return bool(self._hmac_algs or self._static_algs or self._jwks_algs)

    @property
    def can_issue(self) -> bool:
        """Tokens it mints (HS256) are ones it accepts: a secret, and HS256 allowed."""
        return "HS256" in self._hmac_algs

    async def start(self) -> None:
        """Load the identity provider's keys before the first client needs them."""
        if self.jwks is not None:
            await self.jwks.refresh()

    async def aclose(self) -> None:
        if self.jwks is not None:
            await self.jwks.aclose()

    async def _key_for(self, token: str) -> tuple[Any, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError("unauthorized", "The token is malformed.") from exc
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise AuthError("unauthorized", "The token is malformed.")
        if alg in self._hmac_algs:
            return self._secret, alg
        if alg in self._static_algs and self._public_key is not None:
            return self._public_key.key, alg
        if alg in self._jwks_algs and self.jwks is not None:
            kid = header.get("kid")
            if kid is not None and not isinstance(kid, str):
                raise AuthError("unauthorized", "The token is malformed.")
            key = await self.jwks.key_for(kid, alg)
            if key is None:
                raise AuthError("unauthorized", "The token's signing key is not known.")
            return key, alg
        raise AuthError("unauthorized", "The token's algorithm is not accepted.")

    async def verify(self, token: str) -> Identity:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise AuthError("unauthorized", "A token is required.")
        key, alg = await self._key_for(token)
        return self._decode(token, key, alg)

    def _decode(self, token: str, key: Any, alg: str) -> Identity:
        options: jwt.types.Options = {
            "require": ["exp", "sub"],
            "verify_aud": self._audience is not None,
            "verify_iss": self._issuer is not None,
        }
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options=options,
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token_expired", "The token has expired.") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError("unauthorized", "The token is not valid yet.") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("unauthorized", "The token is for another audience.") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError("unauthorized", "The token is from another issuer.") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("unauthorized", f"The token has no {exc.claim!r} claim.") from exc
        except jwt.PyJWTError as exc:
            raise AuthError("unauthorized", "The token is invalid.") from exc
        return identity_from_claims(claims)

    def issue(
        self,
        sub: str,
        *,
        name: str | None = None,
        ttl_s: float = 3600,
        roles: Sequence[str] = (),
    ) -> str:
        """An HS256 token for ``sub`` (built-in accounts, guests, scripts)."""
        if not self.can_issue or not self._secret:
            raise RuntimeError("minting tokens needs JWT_SECRET and HS256 in JWT_ALGORITHMS")
        now = int(time.time())
        claims: dict[str, Any] = {"sub": sub, "iat": now, "nbf": now, "exp": now + int(ttl_s)}
        if name:
            claims["name"] = name
        if roles:
            claims["roles"] = list(roles)
        if self._audience:
            claims["aud"] = self._audience
        if self._issuer:
            claims["iss"] = self._issuer
        return jwt.encode(claims, self._secret, algorithm="HS256")


def bearer_token(header_value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, if any."""
    if not header_value:
        return None
    scheme, _, token = header_value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
