"""Algorithm families and key loading (auth/keys.py)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from auth.keys import KeyConfigError, jwk_accepts, load_public_key, unknown_algorithms

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP256R1())


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_rsa_key_verifies_only_rsa_algorithms() -> None:
    key = load_public_key(pem(RSA))
    assert key.family == "RSA"
    assert key.usable(["HS256", "RS256", "PS256", "ES256", "EdDSA"]) == ["RS256", "PS256"]


def test_ec_key_verifies_only_its_curve() -> None:
    key = load_public_key(pem(EC))
    assert (key.family, key.curve) == ("EC", "P-256")
    assert key.usable(["ES256", "ES384", "RS256", "HS256"]) == ["ES256"]


def test_ed25519_key() -> None:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    text = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    assert load_public_key(text).usable(["EdDSA", "RS256"]) == ["EdDSA"]


def test_key_from_a_file_with_escaped_newlines_or_as_a_certificate(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text(pem(RSA))
    assert load_public_key(str(path)).family == "RSA"
    assert load_public_key(pem(RSA).replace("\n", "\\n")).family == "RSA"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(RSA.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2040, 1, 1, tzinfo=datetime.UTC))
        .sign(RSA, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    assert load_public_key(cert_pem).family == "RSA"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----", "not a valid PEM"),
        ("/does/not/exist.pem", "neither a PEM block nor a readable PEM file"),
        (
            RSA.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            "private key",
        ),
        (pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "2048"),
    ],
)
def test_unusable_keys_are_refused_without_showing_them(text: str, message: str) -> None:
    with pytest.raises(KeyConfigError, match=message) as info:
        load_public_key(text)
    assert "BEGIN" not in str(info.value)


def test_unknown_algorithms() -> None:
    assert unknown_algorithms(["HS256", "RS256", "none", "XS1"]) == ["none", "XS1"]


@pytest.mark.parametrize(
    ("jwk", "alg", "ok"),
    [
        ({"kty": "RSA"}, "RS256", True),
        ({"kty": "RSA"}, "PS384", True),
        ({"kty": "RSA", "alg": "RS256"}, "RS512", False),
        ({"kty": "RSA", "use": "enc"}, "RS256", False),
        ({"kty": "RSA", "key_ops": ["encrypt"]}, "RS256", False),
        ({"kty": "RSA"}, "ES256", False),
        ({"kty": "RSA"}, "HS256", False),
        ({"kty": "oct", "k": "c2VjcmV0"}, "HS256", False),
        ({"kty": "EC", "crv": "P-256"}, "ES256", True),
        ({"kty": "EC", "crv": "P-384"}, "ES256", False),
        ({"kty": "OKP", "crv": "Ed25519"}, "EdDSA", True),
        ({"kty": "RSA"}, "none", False),
    ],
)
def test_jwk_accepts(jwk: dict[str, object], alg: str, ok: bool) -> None:
    assert jwk_accepts(jwk, alg) is ok
