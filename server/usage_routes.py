"""``GET /usage/me`` and ``GET /usage`` (PROTOCOL.md §3), read from the usage ledger.

``days`` lists the UTC days with usage, oldest first.  ``/usage`` is for operators: a
token whose ``roles`` claim holds ``admin``, or a built-in account marked ``admin``.
"""

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from auth.tokens import AuthError, Identity, TokenVerifier
from auth.users import UsersFileError, UserStore
from services.budget import Budgets
from services.ledger import Ledger
from services.storage.db.engine import DatabaseUnavailable
from services.storage.db.store import Totals

WINDOW_DAYS = 30
MAX_RANGE_DAYS = 366
_bearer = HTTPBearer(auto_error=False)


def _today() -> date:
    return datetime.fromtimestamp(time.time(), UTC).date()


def _day(value: str | None, default: date, name: str) -> date:
    if value is None:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise HTTPException(422, f"{name} must be a date, YYYY-MM-DD") from None


def _unavailable() -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "The usage ledger is unavailable.")


def _sum(items: list[Totals]) -> Totals:
    return Totals(
        sum(t.requests for t in items),
        sum(t.prompt_tokens for t in items),
        sum(t.completion_tokens for t in items),
        sum(t.cost for t in items),
    )


def usage_router(
    verifier: TokenVerifier, ledger: Ledger, budgets: Budgets, users_file: Path
) -> APIRouter:
    router = APIRouter(prefix="/usage", tags=["usage"])
    users = UserStore(users_file)

    async def caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Identity:
        if credentials is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "A bearer token is required.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            return await verifier.verify(credentials.credentials)
        except AuthError as exc:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, exc.message, headers={"WWW-Authenticate": "Bearer"}
            ) from None

    Caller = Annotated[Identity, Depends(caller)]

    async def is_admin(identity: Identity) -> bool:
        if identity.is_admin:
            return True
        try:
            account = (await run_in_threadpool(users.load)).get(identity.sub)
        except UsersFileError:
            return False
        return account is not None and account.admin

    @router.get("/me", summary="The caller's usage: today, the last 30 UTC days, the budget")
    async def me(identity: Caller) -> dict[str, Any]:
        today = _today()
        first = today - timedelta(days=WINDOW_DAYS - 1)
        try:
            rows = await ledger.usage_by_day(identity.sub, first.isoformat(), today.isoformat())
        except DatabaseUnavailable:
            raise _unavailable() from None
        days = [{"date": day, **totals.to_wire()} for _user, day, totals in rows]
        current = next((t for _u, day, t in rows if day == today.isoformat()), Totals())
        return {
            "user": identity.sub,
            "budget": budgets.limits_for(identity.budget).to_wire(),
            "today": current.to_wire(),
            "days": days,
        }

    @router.get(
        "",
        summary="Operators: usage per user and per model (default: the last 30 UTC days)",
        responses={403: {"description": "Not an operator"}},
    )
    async def everyone(
        identity: Caller,
        user: Annotated[str | None, Query(max_length=256)] = None,
        from_: Annotated[str | None, Query(alias="from")] = None,
        to: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        if not await is_admin(identity):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "Operators only.")
        last = _day(to, _today(), "to")
        first = _day(from_, last - timedelta(days=WINDOW_DAYS - 1), "from")
        if first > last or (last - first).days >= MAX_RANGE_DAYS:
            raise HTTPException(
                422,
                f"from must not be after to, and the range at most {MAX_RANGE_DAYS} days",
            )
        try:
            rows = await ledger.usage_by_day(user, first.isoformat(), last.isoformat())
            models = await ledger.usage_by_model(user, first.isoformat(), last.isoformat())
        except DatabaseUnavailable:
            raise _unavailable() from None
        per_user: dict[str, list[tuple[str, Totals]]] = {}
        for user_id, day, totals in rows:
            per_user.setdefault(user_id, []).append((day, totals))
        today = _today().isoformat()
        return {
            "from": first.isoformat(),
            "to": last.isoformat(),
            "users": [
                {
                    "user": user_id,
                    "today": next((t for d, t in days if d == today), Totals()).to_wire(),
                    "total": _sum([t for _d, t in days]).to_wire(),
                    "days": [{"date": day, **totals.to_wire()} for day, totals in days],
                }
                for user_id, days in per_user.items()
            ],
            "models": [{"model": model, **totals.to_wire()} for model, totals in models],
            "total": _sum([t for _m, t in models]).to_wire(),
        }

    return router
