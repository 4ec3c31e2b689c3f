"""Algorithm families and verification keys (no I/O).

A key is only ever used with the algorithms of its own family: the shared secret with
HMAC, an RSA key with RS*/PS*, an EC key with the ES* of its curve, an OKP key with
EdDSA.  That rule, applied before PyJWT sees the token, is what makes HS/RS confusion
(an HS256 token "signed" with the bytes of the RSA public key) impossible.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

Family = Literal["HMAC", "RSA", "EC", "OKP"]

ALGORITHMS: dict[str, Family] = {
    "HS256": "HMAC",
    "HS384": "HMAC",
    "HS512": "HMAC",
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "EC",
    "ES256K": "EC",
    "ES384": "EC",
    "ES512": "EC",
    "EdDSA": "OKP",
}

# The curve each ES* algorithm is defined for (RFC 7518 §3.4, RFC 8812).
EC_CURVES: dict[str, str] = {
    "ES256": "P-256",
    "ES256K": "secp256k1",
    "ES384": "P-384",
    "ES512": "P-521",
}
_CURVE_NAMES = {
    "secp256r1": "P-256",
    "secp256k1": "secp256k1",
    "secp384r1": "P-384",
    "secp521r1": "P-521",
}

MIN_HMAC_SECRET_BYTES = 32  # RFC 7518 §3.2: a key at least as long as the hash output


class KeyConfigError(ValueError):
    """A configured key cannot be used; the message says why (and never shows the key)."""


def family_of(alg: str) -> Family | None:
    return ALGORITHMS.get(alg)


def unknown_algorithms(algorithms: Iterable[str]) -> list[str]:
    return [alg for alg in algorithms if alg not in ALGORITHMS]


class PublicKey:
    """A static verification key (``JWT_PUBLIC_KEY``) and the algorithms it may verify."""

    def __init__(self, key: Any, family: Family, curve: str | None = None) -> None:
        self.key = key
        self.family = family
        self.curve = curve

    def accepts(self, alg: str) -> bool:
        if family_of(alg) != self.family:
            return False
        return self.family != "EC" or EC_CURVES.get(alg) == self.curve

    def usable(self, algorithms: Iterable[str]) -> list[str]:
        return [alg for alg in algorithms if self.accepts(alg)]


def load_public_key(text: str) -> PublicKey:
    """A PEM public key or certificate, given inline or as the path of a PEM file.

    Inline values may carry ``\\n`` escapes (as environment variables often do).
    """
    text = text.strip()
    if not text.startswith("-----BEGIN"):
        path = Path(text).expanduser()
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyConfigError(
                "JWT_PUBLIC_KEY is neither a PEM block nor a readable PEM file"
            ) from exc
    text = text.replace("\\n", "\n")
    data = text.encode("ascii", errors="replace")
    if b"PRIVATE KEY-----" in data:
        raise KeyConfigError("JWT_PUBLIC_KEY holds a private key; give the public key only")
    try:
        if b"BEGIN CERTIFICATE" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyConfigError("JWT_PUBLIC_KEY is not a valid PEM public key") from exc
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise KeyConfigError("JWT_PUBLIC_KEY is an RSA key shorter than 2048 bits")
        return PublicKey(key, "RSA")
    if isinstance(key, ec.EllipticCurvePublicKey):
        return PublicKey(key, "EC", _CURVE_NAMES.get(key.curve.name, key.curve.name))
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return PublicKey(key, "OKP")
    raise KeyConfigError("JWT_PUBLIC_KEY is of a type JWTs cannot use")


_KTY: dict[Family, str] = {"RSA": "RSA", "EC": "EC", "OKP": "OKP", "HMAC": "oct"}


def jwk_accepts(jwk: Mapping[str, Any], alg: str) -> bool:
    """Whether a JWK from a key set may verify a token of ``alg``.

    Never for HMAC (a key set is public); the key type must be the algorithm's family,
    an EC key's curve the algorithm's curve, and a key that names its ``alg`` or ``use``
    is held to them.
    """
    family = family_of(alg)
    if family is None or family == "HMAC":
        return False
    if jwk.get("kty") != _KTY[family]:
        return False
    if jwk.get("use") not in (None, "sig"):
        return False
    if jwk.get("alg") not in (None, alg):
        return False
    key_ops = jwk.get("key_ops")
    if isinstance(key_ops, list) and "verify" not in key_ops:
        return False
    return family != "EC" or jwk.get("crv") == EC_CURVES.get(alg)
