"""``GET /admin/api/v1/audit``: the audit log, newest first, filtered and in cursor pages.

Needs ``admin:audit:read`` from a session signed in with two factors; the
network guard serves ``/admin/*`` on the admin listener only. The cursor is
opaque to clients and only ever a starting point: a forged one can move the
page, never widen the filter or the permission.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from bastion.access import Permission, Principal, require_mfa
from bastion.audit.entry import format_at
from bastion.audit.query import EventFilter, list_events
from bastion.http.problems import ValidationFailed

router = APIRouter(prefix="/admin/api/v1", tags=["admin"])
AuditRead = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_AUDIT_READ))]
MAX_LIMIT = 200
Tag = Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9_:.-]+$")]


class AuditEventInfo(BaseModel):
    id: int
    seq: int | None
    at: str
    tag: str
    outcome: str
    actor_id: uuid.UUID | None
    subject_id: uuid.UUID | None
    ip: str | None
    request_id: str | None
    details: dict[str, Any]
    redacted: bool
    purged: bool


class AuditPage(BaseModel):
    items: list[AuditEventInfo]
    next_cursor: str | None


def _cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"a1:{last_id}".encode()).decode().rstrip("=")


def _position(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = text.partition(":")
        if prefix != "a1" or not value.isdigit() or len(value) > 18:
            raise ValueError(cursor)
        return int(value)
    except ValueError:
        raise ValidationFailed(
            "The cursor is not valid for this query.",
            extra={"errors": [{"parameter": "cursor", "in": "query", "detail": "not a cursor this API gave"}]},
        ) from None


@router.get("/audit", name="admin_audit")
async def list_audit(  # noqa: PLR0917 - one query parameter each
    request: Request,
    caller: AuditRead,
    tag: Tag = None,
    actor: uuid.UUID | None = None,
    subject: uuid.UUID | None = None,
    outcome: Annotated[str | None, Query(pattern=r"^(success|failure|denied)$")] = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
) -> AuditPage:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise ValidationFailed(
                "Times need a zone.",
                extra={"errors": [{"parameter": name, "in": "query", "detail": "give a zone, e.g. Z"}]},
            )
    where = EventFilter(tag=tag, actor=actor, subject=subject, outcome=outcome, since=since, until=until)
    before = _position(cursor) if cursor is not None else None
    rows = await list_events(request.app.state.db, where, before_id=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        AuditEventInfo(
            id=row.id,
            seq=row.seq,
            at=format_at(row.at),
            tag=row.tag,
            outcome=row.outcome,
            actor_id=row.actor_id,
            subject_id=row.subject_id,
            ip=row.ip,
            request_id=row.request_id,
            details=row.details or {},
            redacted=row.redacted_at is not None,
            purged=row.purged_at is not None,
        )
        for row in rows
    ]
    return AuditPage(items=items, next_cursor=_cursor(rows[-1].id) if more and rows else None)
