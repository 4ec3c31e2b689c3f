"""``GET /asyncapi.json`` and ``GET /docs/events``: the event API, from one document."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from events.core.asyncapi import asyncapi_document, check_names, with_servers
from events.core.catalog import EventDoc
from server.eventdocs import render_event_docs


def event_docs_router(events: Sequence[EventDoc], *, title: str, version: str) -> APIRouter:
    """Serves the document of ``events`` (built on first use) with this server as host."""
    check_names(events)
    router = APIRouter(tags=["documentation"])
    document = functools.cache(lambda: asyncapi_document(events, title=title, version=version))

    def for_request(request: Request) -> dict[str, Any]:
        secure = request.url.scheme in ("https", "wss")
        return with_servers(document(), request.url.netloc, secure=secure)

    @router.get(
        "/asyncapi.json",
        summary="AsyncAPI 3 description of the Socket.IO and raw WebSocket events",
        description="Generated from the payload models that validate the events. "
        "Human-readable: [/docs/events](/docs/events).",
        responses={200: {"content": {"application/json": {"example": {"asyncapi": "3.0.0"}}}}},
    )
    async def asyncapi_json(request: Request) -> JSONResponse:
        return JSONResponse(for_request(request))

    @router.get(
        "/docs/events",
        summary="The event API as a page (rendered from /asyncapi.json)",
        response_class=HTMLResponse,
    )
    async def event_docs(request: Request) -> HTMLResponse:
        return HTMLResponse(render_event_docs(for_request(request)))

    return router


HTTP_DESCRIPTION = """\
HTTP side of **llm-relay**, a Socket.IO server for streaming LLM chat.

The chat itself happens over Socket.IO (path `/socket.io`) or the raw WebSocket
`/websockets/openrouter`; those events are documented in
**[/docs/events](/docs/events)** (human-readable) and
**[/asyncapi.json](/asyncapi.json)** (AsyncAPI 3), generated from the same payload models.

Getting a token: `POST /auth/token` (built-in accounts, OAuth2 password form) or
`POST /auth/guest` (demo mode), then connect with `io(url, {auth: {token}})`.
"""

OPENAPI_TAGS = [
    {"name": "auth", "description": "Tokens for connecting (JWT)."},
    {"name": "health", "description": "Liveness and readiness probes."},
    {"name": "operations", "description": "Prometheus metrics."},
    {
        "name": "documentation",
        "description": "The event API: [/docs/events](/docs/events), "
        "[/asyncapi.json](/asyncapi.json).",
    },
]

# Swagger UI from the files vendored in web/vendor/swagger-ui (scripts/vendor-web.sh), so
# /docs works offline; no inline script, so a strict policy holds.
SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>llm-relay: HTTP API</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="/openapi.json"></div>
<script src="/static/vendor/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/static/js/swagger-init.js"></script>
</body>
</html>
"""

SWAGGER_HEADERS = {
    # Swagger UI sets inline styles (style-src 'unsafe-inline'); scripts only from here.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def swagger_router() -> APIRouter:
    """``GET /docs``: Swagger UI for ``/openapi.json``, every file served by this server."""
    router = APIRouter()

    @router.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(SWAGGER_PAGE, headers=SWAGGER_HEADERS)

    return router
