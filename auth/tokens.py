"""JWT verification and minting (PyJWT).  Pure functions of their inputs; no I/O here."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt

AuthCode = Literal["unauthorized", "token_expired"]

_HMAC = frozenset({"HS256", "HS384", "HS512"})


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


def identity_from_claims(claims: Mapping[str, Any]) -> Identity:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError("unauthorized", "The token has no subject.")
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

    HMAC algorithms verify only with the shared secret, asymmetric ones only with the
    public key (no HS/RS confusion); ``none`` is never accepted.
    """

    def __init__(
        self,
        *,
        secret: str | None,
        public_key: str | None = None,
        algorithms: Sequence[str] = ("HS256",),
        audience: str | None = None,
        issuer: str | None = None,
        leeway_s: float = 5.0,
    ) -> None:
        algs = [alg for alg in algorithms if alg.lower() != "none"]
        self._hmac_algs = [alg for alg in algs if alg in _HMAC and secret]
        self._asym_algs = [alg for alg in algs if alg not in _HMAC and public_key]
        self._secret = secret
        self._public_key = public_key
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway_s

    @property
    def can_verify(self) -> bool:
        return bool(self._hmac_algs or self._asym_algs)

    @property
    def can_issue(self) -> bool:
        return bool(self._secret)

    def _key_for(self, token: str) -> tuple[Any, list[str]]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError("unauthorized", "The token is malformed.") from exc
        alg = header.get("alg")
        if alg in self._hmac_algs:
            return self._secret, [alg]
        if alg in self._asym_algs:
            return self._public_key, [alg]
        raise AuthError("unauthorized", "The token's algorithm is not accepted.")

    def verify(self, token: str) -> Identity:
        if not token or len(token) > 16_384:
            raise AuthError("unauthorized", "A token is required.")
        key, algs = self._key_for(token)
        options: jwt.types.Options = {"require": ["exp", "sub"]}
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algs,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options=options,
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token_expired", "The token has expired.") from exc
        except jwt.PyJWTError as exc:
            raise AuthError("unauthorized", "The token is invalid.") from exc
        return identity_from_claims(claims)

    def issue(self, sub: str, *, name: str | None = None, ttl_s: float = 3600) -> str:
        """An HS256 token for ``sub`` (built-in accounts, guests, scripts)."""
        if not self._secret:
            raise RuntimeError("minting tokens needs JWT_SECRET")
        now = int(time.time())
        claims: dict[str, Any] = {"sub": sub, "iat": now, "nbf": now, "exp": now + int(ttl_s)}
        if name:
            claims["name"] = name
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
