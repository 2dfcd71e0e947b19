"""Several instances: counters shared through Redis, one tail cluster-wide, late commits not missed."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from bastion.audit.models import AuditEvent
from bastion.clock import FrozenClock
from bastion.db import open_database, transaction
from bastion.monitor.tail import Tail
from harness import CHEAP_ARGON2, Harness, open_harness


@pytest.fixture
def harness_settings(redis_url: str) -> dict[str, Any]:
    return {"redis_url": redis_url, "monitor": {"enabled": True, "poll_interval": 0.1}}


async def test_two_instances_count_http_signals_together(harness: Harness) -> None:
    """Five 401s on one API key at each of two instances (counters in Redis) are the ten of
    ``api-key-401-burst``: one alert, though neither instance saw ten."""
    settings = harness.settings
    key = uuid.uuid4().hex[:16]  # an id as Bastion issues them (16 hex digits)
    async with open_harness(settings, FrozenClock(harness.clock.now())) as other:
        for n in range(10):
            client = (harness if n % 2 else other).client
            response = await client.get("/api/v1/me", headers={"authorization": f"Bearer bsk_{key}_secretpart"})
            assert response.status_code == 401
        # The jobs' own loops may judge the signals first: look at the store, not at drain()'s answer.
        await harness.app.state.monitor.drain()
        await other.app.state.monitor.drain()
        store, db = harness.app.state.monitor.store, harness.app.state.db
        for _ in range(100):
            page, _ = await store.page(db, rule="api-key-401-burst")
            if page:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # a second alert, if there were one, would be stored by now
        page, _ = await store.page(db, rule="api-key-401-burst")
        assert [a.group_key for a in page] == [f"api_key:{key}"]


async def test_one_tail_holds_the_lease(harness: Harness) -> None:
    """Of two instances on one database, one reads the tail (lease "monitor-tail"): an
    admin sign-in makes one alert, not two."""
    settings = harness.settings.model_copy(update={"passwords": harness.settings.passwords})
    async with open_harness(settings, harness.clock) as other:
        await asyncio.sleep(0.5)
        holders = [h.app.state.monitor.loop.holding for h in (harness, other)]
        assert sorted(holders) == [False, True]
        await harness.admin()
        for _ in range(100):
            page, _ = await harness.app.state.monitor.store.page(harness.app.state.db, rule="admin-sign-in")
            if page:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        page, _ = await harness.app.state.monitor.store.page(harness.app.state.db, rule="admin-sign-in")
        assert len(page) == 1


async def test_tail_reads_an_event_committed_after_a_later_one(database_url: str | None, make_settings: Any) -> None:
    """Transactions commit in any order: an event whose id is below the last one read is read
    with the next poll, once (PostgreSQL, where two writers run at once)."""
    if database_url is None:
        pytest.skip("SQLite has one writer at a time: ids commit in order")
    settings = make_settings(passwords=CHEAP_ARGON2)
    db = open_database(settings.sqlalchemy_url)
    row = {"at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "tag": "auth:login", "outcome": "failure", "details": {}}
    try:
        tail = Tail(db)
        await tail.start_at_end()
        slow = db.begin()
        await slow.execute(sa.insert(AuditEvent).values(**row, ip="192.0.2.1"))  # takes an id, not committed
        fast = db.begin()
        await fast.execute(sa.insert(AuditEvent).values(**row, ip="192.0.2.2"))
        await fast.close(commit=True)
        assert [s.address for s in await tail.read()] == ["192.0.2.2"]
        await slow.close(commit=True)
        assert [s.address for s in await tail.read()] == ["192.0.2.1"]
        assert await tail.read() == []
    finally:
        await db.close()


async def test_tail_resumes_from_the_noted_position_within_its_limit(
    database_url: str | None, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next holder of the tail resumes after the position the last one noted in the lease row
    (only a holder notes); from the newest event when the note is too far behind, or past the newest
    (a database restored from an older backup)."""
    from bastion.audit import last_event_id
    from bastion.db import leases
    from bastion.monitor import tail as tail_module

    settings = make_settings(passwords=CHEAP_ARGON2)
    db = open_database(settings.sqlalchemy_url)
    row = {"at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "tag": "auth:login", "outcome": "failure", "details": {}}
    now = dt.datetime.now(dt.UTC)
    try:
        assert await leases.hold(db, "monitor-tail", "first", now=now, seconds=10)
        async with transaction(db) as tx:
            await tx.execute(sa.insert(AuditEvent).values(**row, ip="192.0.2.1"))
        assert await leases.note_position(db, "monitor-tail", "first", await last_event_id(db))
        assert not await leases.note_position(db, "monitor-tail", "not-the-holder", 0), "only the holder notes"
        for address in ("192.0.2.2", "192.0.2.3"):
            async with transaction(db) as tx:
                await tx.execute(sa.insert(AuditEvent).values(**row, ip=address))
        noted = await leases.noted_position(db, "monitor-tail")
        tail = Tail(db)
        assert await tail.resume(noted) == 0
        assert [s.address for s in await tail.read()] == ["192.0.2.2", "192.0.2.3"]

        monkeypatch.setattr(tail_module, "RESUME_LIMIT", 1)
        too_far = Tail(db)
        assert await too_far.resume(noted) == 2, "two events skipped, and said so"
        assert await too_far.read() == []
        past = Tail(db)
        assert await past.resume(await last_event_id(db) + 5) == 0
        assert await past.read() == []
    finally:
        await db.close()
