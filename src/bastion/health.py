"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from bastion.access.deps import public
from bastion.http.problems import NotReady

router = APIRouter(tags=["health"], dependencies=[Depends(public)])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the database and, when configured, Redis answer",
    responses={503: {"description": "A dependency is down"}},
)
async def readyz(request: Request) -> dict[str, str]:
    state = request.app.state
    if not await state.db.ping():
        raise NotReady("The database is not reachable.")
    if state.settings.redis_url is not None and not await state.rate_limiter.ping():
        raise NotReady("Redis is not reachable.")
    return {"status": "ready"}
