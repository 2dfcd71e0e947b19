"""Your own routes on Bastion: a small "reports" API.

Run it with Bastion's server, TLS and settings:

    bastion serve --app examples.reports:app_factory

Every route below inherits, without a line of its own: bearer-token and API
key authentication with live-session checks, default-deny permissions (and
an audit event for every refusal), problem+json errors with request ids,
security headers, body limits and JSON-only bodies. Grant the permission to
a role through the admin API (PUT /admin/api/v1/roles/{name}) or the role
``admin``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

import bastion
from bastion.audit.events import EventTag

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])
Reader = Annotated[bastion.Principal, Depends(bastion.require("reports:read"))]
Writer = Annotated[bastion.Principal, Depends(bastion.require("reports:write"))]
_REPORTS: list[dict[str, str]] = []  # an example: keep real data in the database


class NewReport(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown fields are a 422, never stored
    title: str = Field(min_length=1, max_length=200)


@router.get("", dependencies=[Depends(bastion.rate_limit("120/minute", scope="reports:list"))])
async def list_reports(caller: Reader) -> list[dict[str, str]]:
    return list(_REPORTS)


@router.post("", status_code=201, dependencies=[Depends(bastion.rate_limit("30/minute", scope="reports:create"))])
async def create_report(body: NewReport, caller: Writer, request: Request) -> dict[str, str]:
    report = {"title": body.title, "author": str(caller.user_id)}
    async with bastion.unit_of_work(request) as uow:
        # The audit event commits with the change, or not at all.
        bastion.record_event(
            uow.db,
            request.app.state.clock,
            EventTag.EXTENSION,
            origin=uow.origin,
            actor_id=caller.user_id,
            details={"action": "report.create"},
        )
    _REPORTS.append(report)
    return report


@router.get("/health", dependencies=[Depends(bastion.public)])
async def reports_health() -> dict[str, str]:
    return {"status": "ok"}


def app_factory() -> FastAPI:
    app = bastion.create_app(bastion.load_settings())
    app.include_router(router)
    return app
