"""Audit events wait in the session until it flushes or commits, and share its fate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bastion.audit import EventTag, Origin, record_event
from bastion.audit.models import AuditEvent
from bastion.clock import FrozenClock
from bastion.db import create_engine

ORIGIN = Origin(ip="192.0.2.1", request_id="req-00000001")


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(AuditEvent.__table__.create)
    yield engine
    await engine.dispose()


async def stored(engine: AsyncEngine) -> list[str]:
    async with AsyncSession(engine) as db:
        return [event.details["n"] for event in await db.scalars(select(AuditEvent).order_by(AuditEvent.id))]


def record(db: AsyncSession, n: str) -> None:
    record_event(db, FrozenClock(), EventTag.ROLE_CHANGE, origin=ORIGIN, details={"n": n})


async def test_v16_2_1_events_commit_with_the_transaction_and_vanish_with_its_rollback(engine: AsyncEngine) -> None:
    """V16.2.1: an event describes a change that happened: a rolled-back
    transaction leaves none, the next committed one leaves its own."""
    async with AsyncSession(engine) as db:
        record(db, "undone")
        await db.rollback()
        record(db, "kept")
        await db.commit()
    assert await stored(engine) == ["kept"]


async def test_v16_2_1_a_rolled_back_savepoint_takes_only_its_own_events(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as db:
        record(db, "outer")
        outer = await db.begin_nested()
        record(db, "in-savepoint")
        inner = await db.begin_nested()
        record(db, "in-inner-savepoint")
        await inner.commit()
        await outer.rollback()
        record(db, "after")
        await db.commit()
    assert await stored(engine) == ["outer", "after"]


async def test_events_are_written_by_a_flush(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as db:
        record(db, "flushed")
        db.add(AuditEvent(at=FrozenClock().now(), tag="x", outcome="success", details={"n": "orm"}))
        await db.flush()
        assert [e.details["n"] for e in await db.scalars(select(AuditEvent).order_by(AuditEvent.id))] == [
            "flushed",
            "orm",
        ]
        await db.commit()
    assert await stored(engine) == ["flushed", "orm"]
