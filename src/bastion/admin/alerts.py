"""``/admin/api/v1/alerts``: the detection rules' alerts, listed and acknowledged.

Like every admin route: an admin permission (``admin:alerts:read`` /
``admin:alerts:write``) from a session signed in with two factors, on the
admin listener only. Pages are newest first with an opaque cursor.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from bastion.access import Permission, Principal, require_mfa
from bastion.http.problems import NotFound, ValidationFailed
from bastion.monitor.alerts import MAX_PAGE, AlertInfo, AlertStore, BadCursor
from bastion.uow import unit_of_work

router = APIRouter(prefix="/admin/api/v1", tags=["admin"])

AlertsRead = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_ALERTS_READ))]
AlertsWrite = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_ALERTS_WRITE))]


class AlertOut(BaseModel):
    id: uuid.UUID
    rule: str
    severity: str
    group: str
    status: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    count: int
    details: dict[str, Any]
    acknowledged_at: dt.datetime | None
    acknowledged_by: str | None

    @classmethod
    def of(cls, alert: AlertInfo) -> AlertOut:
        """The alert as ``AlertInfo.as_json`` shapes it, as ``bastion alerts list --json`` prints it."""
        return cls.model_validate(alert.as_json())


class AlertPage(BaseModel):
    alerts: list[AlertOut]
    # Pass as ``cursor`` for the next page; null on the last one.
    next_cursor: str | None


def _store(request: Request) -> AlertStore:
    monitor = request.app.state.monitor
    return monitor.store if monitor is not None else AlertStore(request.app.state.clock)


@router.get("/alerts")
async def list_alerts(
    request: Request,
    caller: AlertsRead,
    *,
    status: Annotated[Literal["open", "acknowledged", "superseded"] | None, Query()] = None,
    rule: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")] = None,
    cursor: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> AlertPage:
    try:
        alerts, next_cursor = await _store(request).page(
            request.app.state.db, status=status, rule=rule, cursor=cursor, limit=limit
        )
    except BadCursor:
        raise ValidationFailed("The cursor is not one this list gave.") from None
    return AlertPage(alerts=[AlertOut.of(alert) for alert in alerts], next_cursor=next_cursor)


@router.get("/alerts/{alert_id}", responses={404: {"description": "No such alert"}})
async def get_alert(alert_id: uuid.UUID, request: Request, caller: AlertsRead) -> AlertOut:
    alert = await _store(request).get(request.app.state.db, alert_id)
    if alert is None:
        raise NotFound
    return AlertOut.of(alert)


@router.post("/alerts/{alert_id}/ack", responses={404: {"description": "No such alert"}})
async def acknowledge_alert(alert_id: uuid.UUID, request: Request, caller: AlertsWrite) -> AlertOut:
    async with unit_of_work(request) as uow:
        alert = await _store(request).acknowledge(uow.db, alert_id, by=f"user:{caller.user_id}", origin=uow.origin)
    if alert is None:
        raise NotFound
    return AlertOut.of(alert)
