"""``GET /health`` (liveness) and ``GET /health/ready`` (readiness), built from checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from health.checks import Check


class Liveness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "ok", "version": "0.1.0", "uptime_s": 12.5}]}
    )

    status: str
    version: str
    uptime_s: float


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ok",
                    "checks": {"upstream": "ok", "redis": "disabled", "shutdown": "ok"},
                }
            ]
        }
    )

    status: str
    checks: dict[str, str]


def health_router(version: str, checks: Mapping[str, Check]) -> APIRouter:
    router = APIRouter(tags=["health"])
    started = time.monotonic()

    @router.get("/health", response_model=Liveness, summary="Liveness")
    async def health() -> Liveness:
        return Liveness(status="ok", version=version, uptime_s=round(time.monotonic() - started, 3))

    @router.get(
        "/health/ready",
        response_model=Readiness,
        summary="Readiness: 200 when every check passes, else 503",
        responses={503: {"model": Readiness, "description": "Not ready"}},
    )
    async def ready() -> JSONResponse:
        names = list(checks)
        results = await asyncio.gather(*(checks[name]() for name in names))
        ok = all(result.ready for result in results)
        body = Readiness(
            status="ok" if ok else "unavailable",
            checks={name: result.status for name, result in zip(names, results, strict=True)},
        )
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    return router
