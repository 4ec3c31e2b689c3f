"""Settings that cannot verify tokens are refused with a clear message (server/security.py)."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from server.security import ConfigError, build_verifier
from server.settings import Settings

SECRET = "s" * 40
RSA_PEM = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
EC_PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "No way to verify tokens"),
        ({"jwt_secret": "short"}, "at least 32"),
        ({"jwt_secret": SECRET, "jwt_algorithms": "HS512"}, "at least 64"),
        ({"jwt_public_key": RSA_PEM}, "names no algorithm for it"),
        ({"jwt_public_key": RSA_PEM, "jwt_algorithms": "ES256"}, "e.g. to RS256"),
        ({"jwt_public_key": EC_PEM, "jwt_algorithms": "RS256"}, "e.g. to ES256"),
        ({"jwt_jwks_url": "https://idp/jwks"}, "names no asymmetric algorithm"),
        (
            {"jwt_jwks_url": "https://idp/jwks", "jwt_public_key": RSA_PEM},
            "not both",
        ),
        ({"jwt_public_key": "nonsense", "jwt_algorithms": "RS256"}, "readable PEM file"),
    ],
)
def test_config_errors(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_verifier(settings(**values))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"jwt_algorithms": "HS256,none"}, "never contain 'none'"),
        ({"jwt_algorithms": "NONE"}, "never contain 'none'"),
        ({"jwt_algorithms": "HS256,XS999"}, "unknown algorithms"),
        ({"jwt_algorithms": ""}, "at least one"),
        ({"jwt_jwks_url": "file:///etc/passwd"}, "http"),
    ],
)
def test_settings_validation(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**values)


def test_algorithm_names_are_normalised() -> None:
    assert settings(jwt_algorithms="rs256, eddsa,RS256").jwt_algorithms == ["RS256", "EdDSA"]


@pytest.mark.parametrize(
    "values",
    [
        {"jwt_secret": SECRET},
        {"jwt_public_key": RSA_PEM, "jwt_algorithms": "RS256,PS256"},
        {"jwt_public_key": EC_PEM, "jwt_algorithms": "ES256"},
        {"jwt_jwks_url": "https://idp/jwks", "jwt_algorithms": "RS256"},
        {"jwt_secret": SECRET, "jwt_jwks_url": "https://idp/jwks", "jwt_algorithms": "HS256,RS256"},
        {"allow_anonymous": True},
        {"demo": True},
    ],
)
def test_workable_settings(values: dict[str, Any]) -> None:
    verifier = build_verifier(settings(**values))
    assert verifier.can_verify or values.get("allow_anonymous") or values.get("demo")


def test_redis_password_is_a_secret() -> None:
    values = settings(jwt_secret=SECRET, redis_url="redis://:hunter2-pw@redis:6379/0")
    assert "hunter2-pw" in values.secret_values()
