"""Getting a token: ``POST /auth/token`` with a built-in account's name and password."""

from __future__ import annotations

import aiohttp

from llm_relay_client.errors import CONNECTION_ERROR, ChatError


async def fetch_token(url: str, username: str, password: str, *, timeout_s: float = 10.0) -> str:
    """Log in with the OAuth2 password form; a wrong name or password is ``unauthorized``."""
    endpoint = url.rstrip("/") + "/auth/token"
    form = {"grant_type": "password", "username": username, "password": password}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http,
            http.post(endpoint, data=form) as resp,
        ):
            if resp.status in (400, 401, 403, 422):
                raise ChatError("unauthorized", "Wrong user name or password.")
            if resp.status != 200:
                raise ChatError(
                    CONNECTION_ERROR,
                    f"POST /auth/token answered HTTP {resp.status}.",
                    retryable=resp.status >= 500,
                )
            body = await resp.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ChatError(
            CONNECTION_ERROR,
            f"Cannot reach {endpoint}: {exc or type(exc).__name__}",
            retryable=True,
        ) from None
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise ChatError(CONNECTION_ERROR, "POST /auth/token sent no access_token.")
    return token
