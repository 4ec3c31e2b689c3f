"""JwksKeys: caching, refresh on unknown kid with a minimum interval, outages."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from auth.jwks import JwksFetchError, JwksKeys, parse_jwks

KEY1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**data, "kid": kid, **extra}


class Provider:
    """The injected fetch: serves ``keys`` and counts calls."""

    def __init__(self, *keys: dict[str, Any]) -> None:
        self.keys = list(keys)
        self.calls = 0
        self.fail = False
        self.delay = 0.0

    async def __call__(self, _url: str) -> bytes:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise OSError("connection refused")
        return json.dumps({"keys": self.keys}).encode()


async def test_cached_and_matched_by_kid_and_family() -> None:
    provider = Provider(jwk(KEY1, "a"), jwk(KEY2, "b"))
    keys = JwksKeys("https://idp/jwks", fetch=provider)
    found = await keys.key_for("a", "RS256")
    assert found is not None
    assert found.key.public_numbers() == KEY1.public_key().public_numbers()
    assert await keys.key_for("b", "PS256") is not None
    assert await keys.key_for("a", "ES256") is None  # wrong family
    assert await keys.key_for(None, "RS256") is None  # ambiguous without kid
    assert provider.calls == 1


async def test_no_kid_is_fine_with_a_single_key() -> None:
    keys = JwksKeys("https://idp/jwks", fetch=Provider(jwk(KEY1, "a")))
    assert await keys.key_for(None, "RS256") is not None


async def test_unknown_kid_refetches_at_most_once_per_interval() -> None:
    provider = Provider(jwk(KEY1, "a"))
    keys = JwksKeys("https://idp/jwks", fetch=provider, min_refresh_s=3600)
    await keys.refresh()
    assert provider.calls == 1
    results = await asyncio.gather(*(keys.key_for(f"x{i}", "RS256") for i in range(50)))
    assert results == [None] * 50
    assert provider.calls == 1  # too soon after the first fetch


async def test_rotation_is_picked_up_and_concurrent_lookups_share_a_fetch() -> None:
    provider = Provider(jwk(KEY1, "a"))
    keys = JwksKeys("https://idp/jwks", fetch=provider, min_refresh_s=0)
    await keys.refresh()
    provider.keys = [jwk(KEY1, "a"), jwk(KEY2, "b")]
    provider.delay = 0.05
    results = await asyncio.gather(*(keys.key_for("b", "RS256") for _ in range(20)))
    assert all(result is not None for result in results)
    assert provider.calls == 2


async def test_failed_fetch_keeps_known_keys() -> None:
    provider = Provider(jwk(KEY1, "a"))
    keys = JwksKeys("https://idp/jwks", fetch=provider, min_refresh_s=0)
    await keys.refresh()
    provider.fail = True
    assert await keys.key_for("b", "RS256") is None
    assert provider.calls == 2
    assert await keys.key_for("a", "RS256") is not None


async def test_stale_set_is_refreshed_in_the_background() -> None:
    provider = Provider(jwk(KEY1, "a"))
    keys = JwksKeys("https://idp/jwks", fetch=provider, min_refresh_s=0, max_age_s=0.01)
    await keys.refresh()
    await asyncio.sleep(0.05)
    assert await keys.key_for("a", "RS256") is not None  # answered from the cache
    for _ in range(100):
        if provider.calls == 2:
            break
        await asyncio.sleep(0.01)
    assert provider.calls == 2
    await keys.aclose()


async def test_symmetric_and_encryption_keys_are_never_used() -> None:
    provider = Provider(
        {"kty": "oct", "kid": "s", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"},
        jwk(KEY1, "e", use="enc"),
    )
    keys = JwksKeys("https://idp/jwks", fetch=provider)
    assert await keys.key_for("s", "HS256") is None
    assert await keys.key_for("e", "RS256") is None


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"keys": 3}'])
def test_bad_documents(body: bytes) -> None:
    with pytest.raises(JwksFetchError):
        parse_jwks(body)


def test_entries_that_are_not_keys_are_dropped() -> None:
    assert parse_jwks(b'{"keys": [1, {"kid": "x"}, {"kty": "RSA"}]}') == [{"kty": "RSA"}]
