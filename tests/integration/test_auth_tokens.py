"""Token verification at connect, against a real server (PROTOCOL §1, §2)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import pytest

from tests.harness import JWT_SECRET, Recorder, RunningServer, run_server
from tests.integration.auth_support import (
    USER_MSG,
    JwksServer,
    closed_with,
    ec_key,
    hs256_with_key_bytes,
    mint,
    next_json,
    no_secrets_in_logs,
    public_jwk,
    public_pem,
    raw_ws,
    refused,
    remember,
    rsa_key,
    signed,
    unsigned_token,
)

__all__ = ["no_secrets_in_logs"]

RSA = rsa_key()
OTHER_RSA = rsa_key()
EC = ec_key()
RSA_PEM = public_pem(RSA)


@pytest.fixture
async def hs_server(settings_for: Callable[..., Any]) -> AsyncIterator[RunningServer]:
    settings = settings_for(jwt_audience="llm-relay", jwt_issuer="https://issuer.test")
    async with run_server(settings) as running:
        yield running


def hs(sub: str | None = "alice", **claims: Any) -> str:
    claims.setdefault("aud", "llm-relay")
    claims.setdefault("iss", "https://issuer.test")
    return mint(sub, **claims)


async def accepted(server: RunningServer, token: str) -> dict[str, Any]:
    rec = Recorder()
    try:
        await rec.connect(server.url, token)
        return dict(await rec.wait_event("session"))
    finally:
        await rec.close()


# -- refusals ------------------------------------------------------------------------


async def test_no_token_is_refused(hs_server: RunningServer) -> None:
    error = await refused(hs_server.url)
    assert error["message"] == "unauthorized"
    assert error["data"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("make", "code"),
    [
        pytest.param(lambda: "garbage", "unauthorized", id="garbage"),
        pytest.param(lambda: "a.b.c", "unauthorized", id="three-garbage-parts"),
        pytest.param(
            lambda: remember(
                jwt.encode(
                    {"sub": "alice", "exp": int(time.time()) + 60, "aud": "llm-relay"},
                    "another-secret-of-enough-length-0123456789",
                    algorithm="HS256",
                )
            ),
            "unauthorized",
            id="bad-signature",
        ),
        pytest.param(unsigned_token, "unauthorized", id="alg-none"),
        pytest.param(lambda: hs(ttl=-60), "token_expired", id="expired"),
        pytest.param(lambda: hs(nbf=int(time.time()) + 600), "unauthorized", id="nbf-future"),
        pytest.param(lambda: hs(iat=int(time.time()) + 600), "unauthorized", id="iat-future"),
        pytest.param(lambda: hs(aud="another-app"), "unauthorized", id="wrong-aud"),
        pytest.param(lambda: hs(aud=None), "unauthorized", id="missing-aud"),
        pytest.param(lambda: hs(iss="https://evil.test"), "unauthorized", id="wrong-iss"),
        pytest.param(lambda: hs(None), "unauthorized", id="missing-sub"),
        pytest.param(lambda: hs("x" * 300), "unauthorized", id="sub-too-long"),
        pytest.param(
            lambda: remember(
                jwt.encode({"sub": "alice", "aud": "llm-relay"}, JWT_SECRET, algorithm="HS256")
            ),
            "unauthorized",
            id="missing-exp",
        ),
        pytest.param(
            lambda: remember(
                jwt.encode(
                    {"sub": "alice", "exp": int(time.time()) + 60},
                    JWT_SECRET * 2,
                    algorithm="HS512",
                )
            ),
            "unauthorized",
            id="alg-not-allowed",
        ),
    ],
)
async def test_bad_tokens_are_refused_with_their_code(
    hs_server: RunningServer, make: Callable[[], str], code: str
) -> None:
    token = make()
    error = await refused(hs_server.url, token)
    assert error["message"] == "unauthorized"
    assert error["data"]["code"] == code
    assert token not in str(error)


async def test_bearer_header_works_for_non_browser_clients(hs_server: RunningServer) -> None:
    rec = Recorder()
    try:
        await rec.connect(hs_server.url, headers={"Authorization": f"Bearer {hs()}"})
        session = await rec.wait_event("session")
        assert session["user"]["id"] == "alice"
    finally:
        await rec.close()


async def test_hs256_is_accepted_and_names_the_user(hs_server: RunningServer) -> None:
    session = await accepted(hs_server, hs("bob", preferred_username="Bobby"))
    assert session["user"] == {"id": "bob", "name": "Bobby"}


async def test_raw_endpoint_refuses_bad_tokens_with_4401(hs_server: RunningServer) -> None:
    cases = [(None, "unauthorized"), ("garbage", "unauthorized"), (hs(ttl=-60), "token_expired")]
    for token, code in cases:
        async with raw_ws(hs_server.url, token=token) as ws:
            frame = await next_json(ws)
            assert frame["type"] == "error"
            assert frame["code"] == code
            assert await closed_with(ws) == 4401


async def test_raw_endpoint_takes_the_token_in_the_query(hs_server: RunningServer) -> None:
    async with raw_ws(hs_server.url, query=f"?token={hs()}") as ws:
        await ws.send_json({"messages": USER_MSG, "model": "double/normal"})
        while (frame := await next_json(ws))["type"] == "token":
            pass
        assert frame["type"] == "done"


# -- static public keys ------------------------------------------------------------------


async def test_rs256_with_a_static_public_key(settings_for: Callable[..., Any]) -> None:
    settings = settings_for(jwt_secret=None, jwt_public_key=RSA_PEM, jwt_algorithms="RS256")
    async with run_server(settings) as server:
        session = await accepted(server, signed(RSA, sub="carol"))
        assert session["user"]["id"] == "carol"
        # another RSA key, an HS256 token, and the HS/RS confusion are all refused
        for token in (
            signed(OTHER_RSA),
            mint("alice"),
            hs256_with_key_bytes(RSA_PEM.encode()),
        ):
            assert (await refused(server.url, token))["data"]["code"] == "unauthorized"


async def test_hs_rs_confusion_is_refused_even_with_both_families_allowed(
    settings_for: Callable[..., Any], tmp_path: Any
) -> None:
    # The public key given as a file path, as operators often do.
    pem_file = tmp_path / "idp.pem"
    pem_file.write_text(RSA_PEM)
    settings = settings_for(jwt_public_key=str(pem_file), jwt_algorithms="HS256,RS256")
    async with run_server(settings) as server:
        await accepted(server, signed(RSA))
        await accepted(server, mint("alice"))
        for key_bytes in (RSA_PEM.encode(), RSA_PEM.strip().encode()):
            token = hs256_with_key_bytes(key_bytes)
            assert (await refused(server.url, token))["data"]["code"] == "unauthorized"


async def test_es256_with_a_static_key_and_escaped_newlines(
    settings_for: Callable[..., Any],
) -> None:
    escaped = public_pem(EC).strip().replace("\n", "\\n")  # as in a one-line env var
    settings = settings_for(jwt_secret=None, jwt_public_key=escaped, jwt_algorithms="ES256")
    async with run_server(settings) as server:
        await accepted(server, signed(EC, alg="ES256"))
        assert (await refused(server.url, signed(RSA)))["data"]["code"] == "unauthorized"


# -- JWKS ------------------------------------------------------------------------------


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    async with JwksServer() as server:
        server.keys = [public_jwk(RSA, "k1")]
        yield server


async def test_jwks_keys_are_fetched_once_and_rotation_is_picked_up(
    settings_for: Callable[..., Any], jwks: JwksServer
) -> None:
    settings = settings_for(
        jwt_secret=None,
        jwt_jwks_url=jwks.url,
        jwt_algorithms="RS256",
        jwt_jwks_min_refresh_s=0,
    )
    async with run_server(settings) as server:
        assert jwks.requests == 1  # loaded at start-up
        for _ in range(5):
            await accepted(server, signed(RSA, kid="k1"))
        assert jwks.requests == 1  # never per connection

        # the provider rotates: k2 appears, k1 goes
        jwks.keys = [public_jwk(OTHER_RSA, "k2")]
        session = await accepted(server, signed(OTHER_RSA, sub="dave", kid="k2"))
        assert session["user"]["id"] == "dave"
        assert jwks.requests == 2
        # a token naming k2 but signed with the old key is still refused
        forged = signed(RSA, kid="k2")
        assert (await refused(server.url, forged))["data"]["code"] == "unauthorized"


async def test_unknown_kids_are_refused_without_hammering_the_provider(
    settings_for: Callable[..., Any], jwks: JwksServer
) -> None:
    settings = settings_for(
        jwt_secret=None,
        jwt_jwks_url=jwks.url,
        jwt_algorithms="RS256",
        jwt_jwks_min_refresh_s=600,
    )
    async with run_server(settings) as server:
        assert jwks.requests == 1
        tokens = [signed(RSA, kid=f"made-up-{i}") for i in range(10)]
        errors = await asyncio.gather(*(refused(server.url, token) for token in tokens))
        assert {e["data"]["code"] for e in errors} == {"unauthorized"}
        assert jwks.requests == 1  # within the minimum interval: no new fetch
        await accepted(server, signed(RSA, kid="k1"))


async def test_jwks_never_verifies_hmac_tokens(
    settings_for: Callable[..., Any], jwks: JwksServer
) -> None:
    secret = "a-symmetric-key-published-in-the-set-0123456789"
    oct_key = {
        "kty": "oct",
        "kid": "sym",
        "k": jwt.utils.base64url_encode(secret.encode()).decode(),
    }
    jwks.keys = [public_jwk(RSA, "k1"), oct_key]
    settings = settings_for(jwt_secret=None, jwt_jwks_url=jwks.url, jwt_algorithms="RS256,HS256")
    async with run_server(settings) as server:
        token = remember(
            jwt.encode(
                {"sub": "mallory", "exp": int(time.time()) + 60},
                secret,
                algorithm="HS256",
                headers={"kid": "sym"},
            )
        )
        assert (await refused(server.url, token))["data"]["code"] == "unauthorized"
        await accepted(server, signed(RSA, kid="k1"))


async def test_a_jwks_outage_keeps_the_known_keys(
    settings_for: Callable[..., Any], jwks: JwksServer
) -> None:
    settings = settings_for(
        jwt_secret=None, jwt_jwks_url=jwks.url, jwt_algorithms="RS256", jwt_jwks_min_refresh_s=0
    )
    async with run_server(settings) as server:
        jwks.status = 503
        # an unknown kid triggers a refetch, which fails …
        assert (await refused(server.url, signed(RSA, kid="nope")))["data"]["code"] == (
            "unauthorized"
        )
        assert jwks.requests == 2
        # … and the keys already known still work
        await accepted(server, signed(RSA, kid="k1"))


async def test_not_ready_until_the_provider_keys_are_loaded(
    settings_for: Callable[..., Any], jwks: JwksServer
) -> None:
    jwks.status = 503  # the identity provider is down when the server starts
    settings = settings_for(
        jwt_secret=None, jwt_jwks_url=jwks.url, jwt_algorithms="RS256", jwt_jwks_min_refresh_s=0
    )
    async with run_server(settings) as server, aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/health/ready") as resp:
            assert resp.status == 503
            assert (await resp.json())["checks"]["jwks"] == "keys_not_loaded"
        jwks.status = 200
        async with http.get(f"{server.url}/health/ready") as resp:  # retries the fetch
            assert resp.status == 200
            assert (await resp.json())["checks"]["jwks"] == "ok"
        await accepted(server, signed(RSA, kid="k1"))
