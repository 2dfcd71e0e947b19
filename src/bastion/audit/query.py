"""Reading the log for people: the admin API's filtered, newest-first pages."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bastion.audit.models import AuditEvent
from bastion.db import Database


@dataclass(frozen=True)
class EventFilter:
    tag: str | None = None
    actor: uuid.UUID | None = None
    subject: uuid.UUID | None = None
    outcome: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


async def list_events(db: Database, where: EventFilter, *, before_id: int | None, limit: int) -> list[Any]:
    """At most ``limit`` events matching ``where`` with ids below ``before_id``, newest first."""
    query = sa.select(AuditEvent)
    if where.tag is not None:
        query = query.where(AuditEvent.tag == where.tag)
    if where.actor is not None:
        query = query.where(AuditEvent.actor_id == where.actor)
    if where.subject is not None:
        query = query.where(AuditEvent.subject_id == where.subject)
    if where.outcome is not None:
        query = query.where(AuditEvent.outcome == where.outcome)
    if where.since is not None:
        query = query.where(AuditEvent.at >= where.since)
    if where.until is not None:
        query = query.where(AuditEvent.at < where.until)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    return await db.all(query.order_by(AuditEvent.id.desc()).limit(limit))
