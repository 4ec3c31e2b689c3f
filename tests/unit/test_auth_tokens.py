"""TokenVerifier: claims, leeway, algorithm allowlist and key families (no server)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from auth.keys import load_public_key
from auth.tokens import AuthError, TokenVerifier, bearer_token

SECRET = "unit-test-secret-0123456789-abcdefghij"
RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PEM = (
    RSA.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def token(key: Any = SECRET, alg: str = "HS256", **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "alice", "iat": now, "exp": now + 600, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=alg)


async def code_of(verifier: TokenVerifier, value: str) -> str:
    with pytest.raises(AuthError) as info:
        await verifier.verify(value)
    return info.value.code


async def test_claims_and_name() -> None:
    verifier = TokenVerifier(secret=SECRET)
    identity = await verifier.verify(token(name="Alice", preferred_username="al"))
    assert (identity.sub, identity.name) == ("alice", "Alice")
    assert identity.exp is not None
    assert identity.exp > time.time()
    assert (await verifier.verify(token(preferred_username="al"))).name == "al"
    assert (await verifier.verify(token())).name == "alice"


async def test_leeway_applies_to_exp_nbf_and_iat() -> None:
    verifier = TokenVerifier(secret=SECRET, leeway_s=30)
    now = int(time.time())
    await verifier.verify(token(exp=now - 10))
    await verifier.verify(token(nbf=now + 10, iat=now + 10))
    assert await code_of(verifier, token(exp=now - 60)) == "token_expired"
    assert await code_of(verifier, token(nbf=now + 60)) == "unauthorized"
    assert await code_of(verifier, token(iat=now + 60)) == "unauthorized"


async def test_audience_and_issuer_only_when_configured() -> None:
    loose = TokenVerifier(secret=SECRET)
    await loose.verify(token(aud="anything", iss="anyone"))
    strict = TokenVerifier(secret=SECRET, audience="relay", issuer="https://idp")
    await strict.verify(token(aud="relay", iss="https://idp"))
    await strict.verify(token(aud=["other", "relay"], iss="https://idp"))
    for claims in ({"aud": "other", "iss": "https://idp"}, {"aud": "relay", "iss": "x"}, {}):
        assert await code_of(strict, token(**claims)) == "unauthorized"


async def test_allowlist_and_families() -> None:
    both = TokenVerifier(
        secret=SECRET, public_key=load_public_key(RSA_PEM), algorithms=["HS256", "RS256"]
    )
    await both.verify(token())
    await both.verify(token(RSA, "RS256"))
    assert await code_of(both, token(SECRET * 2, "HS512")) == "unauthorized"  # not listed
    rs_only = TokenVerifier(
        secret=SECRET, public_key=load_public_key(RSA_PEM), algorithms=["RS256"]
    )
    assert await code_of(rs_only, token()) == "unauthorized"  # HS256 not listed
    hs_only = TokenVerifier(secret=SECRET, algorithms=["HS256"])
    assert await code_of(hs_only, token(RSA, "RS256")) == "unauthorized"


async def test_none_is_never_accepted_even_if_asked_for() -> None:
    verifier = TokenVerifier(secret=SECRET, algorithms=["none", "HS256"])
    unsigned = jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, None, algorithm="none")
    assert await code_of(verifier, unsigned) == "unauthorized"


async def test_issue_round_trip() -> None:
    verifier = TokenVerifier(secret=SECRET, audience="relay", issuer="https://me")
    identity = await verifier.verify(verifier.issue("bob", name="Bob", ttl_s=60))
    assert (identity.sub, identity.name) == ("bob", "Bob")
    assert identity.claims["aud"] == "relay"
    assert (
        TokenVerifier(
            secret=None, public_key=load_public_key(RSA_PEM), algorithms=["RS256"]
        ).can_issue
        is False
    )


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None
