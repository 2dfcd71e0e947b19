"""Audit events in bulk: many events written through ``record_event``, as
the services write them, a few thousand per transaction."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from bastion.audit import EventTag, Origin, Outcome, record_event
from bastion.audit.models import AuditEvent
from bastion.clock import Clock
from bastion.db import Database, transaction

TAGS = [EventTag.LOGIN, EventTag.REFRESH, EventTag.RECORD_CREATE, EventTag.ACCESS_DENIED]


async def write_events(db: Database, clock: Clock, count: int, *, chunk: int = 5000) -> None:
    """``count`` events through record_event, ``chunk`` per transaction (one INSERT each)."""
    users = [uuid.uuid4() for _ in range(50)]
    done = 0
    while done < count:
        async with transaction(db) as tx:
            for i in range(done, min(count, done + chunk)):
                record_event(
                    tx,
                    clock,
                    TAGS[i % len(TAGS)],
                    origin=Origin(ip=f"203.0.113.{i % 250}", request_id=f"req-{i}"),
                    outcome=Outcome.FAILURE if i % 7 == 0 else Outcome.SUCCESS,
                    actor_id=users[i % len(users)],
                    details={"n": i, "note": "ünïcode ✓"} if i % 3 else {},
                )
        done = min(count, done + chunk)


async def rows(db: Database) -> list[Any]:
    return await db.all(sa.select(AuditEvent).order_by(AuditEvent.id))
