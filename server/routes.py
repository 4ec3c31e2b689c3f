"""HTTP routes besides health: token issuing, what the page needs to start, the page."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.security import OAuth2PasswordRequestForm
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict

from auth.authenticator import new_guest
from auth.tokens import TokenVerifier
from auth.users import UserStore
from server.settings import Settings
from services.storage.logins import LoginThrottle
from services.upstream.catalogue import ModelCatalog

# The page renders untrusted text (model output, other members' messages) without
# ever parsing it as HTML; this policy is the second line of defence.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


class TokenResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "eyJhbGciOiJIUzI1NiJ9…",
                    "token_type": "bearer",
                    "expires_in": 3600,
                }
            ]
        }
    )

    access_token: str
    token_type: str = "bearer"
    expires_in: int


def auth_router(settings: Settings, verifier: TokenVerifier, logins: LoginThrottle) -> APIRouter:
    router = APIRouter(prefix="/auth", tags=["auth"])
    users = UserStore(settings.users_file)
    # bcrypt is slow on purpose: run it off the event loop, a few at a time.
    hashing = asyncio.Semaphore(2)

    @router.post(
        "/token",
        response_model=TokenResponse,
        summary="Log in with a built-in account (OAuth2 password form)",
        responses={
            401: {"description": "Wrong user name or password"},
            429: {
                "description": "Too many failed logins for this account, or from this "
                "address, in the last minute; see Retry-After"
            },
        },
    )
    async def token(
        request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]
    ) -> TokenResponse:
        # The peer address as the ASGI server saw it (X-Forwarded-For only from
        # TRUSTED_PROXIES, applied by uvicorn), never a header the client chose.
        address = request.client.host if request.client else "unknown"
        # Only failures count, per account and (5x) per address; a success never does.
        retry_after = await logins.retry_after(form.username, address)
        if retry_after is not None:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                "Too many failed logins; try again later.",
                headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
            )
        async with hashing:
            account = await run_in_threadpool(users.authenticate, form.username, form.password)
        if account is None or not verifier.can_issue:
            await logins.failed(form.username, address)
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "Wrong user name or password.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        ttl = settings.token_ttl_s
        roles = ("admin",) if account.admin else ()
        issued = verifier.issue(account.username, name=account.name, ttl_s=ttl, roles=roles)
        return TokenResponse(access_token=issued, expires_in=ttl)

    @router.post(
        "/guest",
        response_model=TokenResponse,
        summary="A short-lived token for a fresh guest identity (ALLOW_ANONYMOUS only)",
        responses={404: {"description": "Anonymous access is off"}},
    )
    async def guest() -> TokenResponse:
        if not settings.allow_anonymous or not verifier.can_issue:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "Not Found")
        identity = new_guest()
        ttl = settings.guest_token_ttl_s
        issued = verifier.issue(identity.sub, name=identity.name, ttl_s=ttl)
        return TokenResponse(access_token=issued, expires_in=ttl)

    return router


class ClientConfig(BaseModel):
    protocol: Literal[2] = 2
    allow_anonymous: bool
    password_login: bool
    demo: bool
    default_model: str


class ModelEntry(BaseModel):
    id: str
    name: str


class ModelsResponse(BaseModel):
    default_model: str
    models: list[ModelEntry]
    source: Literal["allowlist", "upstream", "default"]


def client_router(
    settings: Settings, verifier: TokenVerifier, catalog: Callable[[], ModelCatalog | None]
) -> APIRouter:
    """``GET /config`` and ``GET /models``: what a client needs before it connects."""
    router = APIRouter(tags=["client"])
    users = UserStore(settings.users_file)

    @router.get(
        "/config",
        response_model=ClientConfig,
        summary="How to sign in: guest access, password login, the default model",
    )
    async def config() -> ClientConfig:
        return ClientConfig(
            allow_anonymous=settings.allow_anonymous and verifier.can_issue,
            password_login=verifier.can_issue and bool(users.load()),
            demo=settings.demo,
            default_model=settings.default_model,
        )

    @router.get(
        "/models",
        response_model=ModelsResponse,
        summary="Models to pick from: the allowlist, or the upstream's list (cached)",
    )
    async def models() -> ModelsResponse:
        current = catalog()
        if current is None:
            entry = ModelEntry(id=settings.default_model, name=settings.default_model)
            return ModelsResponse(
                default_model=settings.default_model, models=[entry], source="default"
            )
        return ModelsResponse.model_validate((await current.list()).to_wire())

    return router


def web_routes(app: FastAPI, web_dir: Path = WEB_DIR) -> None:
    """``GET /`` serves the chat page; its assets live under ``/static``."""
    index = web_dir / "index.html"

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> FileResponse:
        if not index.is_file():
            raise HTTPException(status.HTTP_404_NOT_FOUND, "The web page is not built.")
        return FileResponse(index, media_type="text/html", headers=PAGE_HEADERS)

    if web_dir.is_dir():
        app.mount("/static", StaticFiles(directory=web_dir), name="static")
