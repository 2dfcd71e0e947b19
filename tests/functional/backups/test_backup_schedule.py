"""The "backups" job of serve: create, prune and drill when their cron schedules say, from the audit log."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest

from bastion.audit import EventTag, Origin, Outcome, record_event
from bastion.backups.schedule import BackupScheduler, backup_loop, last_run, next_due
from bastion.clock import FrozenClock
from bastion.db import Database, open_database, transaction
from bastion.settings import BackupSettings, Settings


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = open_database(settings.sqlalchemy_url)
    yield database
    await database.close()


class Work:
    """Stand-ins for create/prune/drill that write their events as the real ones do."""

    def __init__(self, db: Database, clock: FrozenClock) -> None:
        self.db, self.clock = db, clock
        self.calls: list[str] = []
        self.fail: set[str] = set()

    def of(self, tag: EventTag):  # type: ignore[no-untyped-def]
        async def run() -> None:
            self.calls.append(tag.value)
            failed = tag.value in self.fail
            async with transaction(self.db) as tx:
                outcome = Outcome.FAILURE if failed else Outcome.SUCCESS
                record_event(tx, self.clock, tag, origin=Origin.cli(), outcome=outcome, details={"reason": "x"})
            if failed:
                raise RuntimeError("the backup failed")

        return run


def scheduler(db: Database, clock: FrozenClock, work: Work, **settings: object) -> BackupScheduler:
    return BackupScheduler(
        BackupSettings(**settings),  # type: ignore[arg-type]
        clock,
        db,
        create=work.of(EventTag.BACKUP_CREATE),
        prune=work.of(EventTag.BACKUP_PRUNE),
        drill=work.of(EventTag.BACKUP_DRILL),
    )


def test_next_due_is_cron_in_utc() -> None:
    after = dt.datetime(2026, 3, 1, 2, 59, tzinfo=dt.UTC)
    assert next_due("0 3 * * *", after) == dt.datetime(2026, 3, 1, 3, 0, tzinfo=dt.UTC)
    assert next_due("0 3 * * *", after.replace(hour=3, minute=0)) == dt.datetime(2026, 3, 2, 3, 0, tzinfo=dt.UTC)
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert next_due("0 3 * * *", dt.datetime(2026, 3, 1, 4, 59, tzinfo=plus2)) == dt.datetime(
        2026, 3, 1, 3, 0, tzinfo=dt.UTC
    )


async def test_create_then_prune_at_the_scheduled_time_and_once(db: Database) -> None:
    clock = FrozenClock(dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC))
    work = Work(db, clock)
    jobs = scheduler(db, clock, work, schedule="0 3 * * *", drill_schedule="")
    await jobs.tick()  # first look: counts from now, nothing due
    assert work.calls == []
    clock.advance(minutes=59)
    await jobs.tick()
    assert work.calls == []
    clock.advance(minutes=1)
    await jobs.tick()
    assert work.calls == ["backup:create", "backup:prune"]
    for _ in range(5):
        clock.advance(minutes=1)
        await jobs.tick()
    assert work.calls == ["backup:create", "backup:prune"], "a run already made must not repeat"
    clock.advance(days=1)
    await jobs.tick()
    assert work.calls.count("backup:create") == 2


async def test_a_missed_run_is_made_when_the_server_is_back(db: Database) -> None:
    """The last event is yesterday's: after a night of downtime, a new process backs up at once."""
    clock = FrozenClock(dt.datetime(2026, 3, 1, 3, 0, tzinfo=dt.UTC))
    work = Work(db, clock)
    await work.of(EventTag.BACKUP_CREATE)()
    work.calls.clear()
    clock.advance(days=1, hours=6)  # 09:00 the next day: 03:00 was missed
    await scheduler(db, clock, work, schedule="0 3 * * *", drill_schedule="").tick()
    assert work.calls == ["backup:create", "backup:prune"]


async def test_a_run_by_another_process_counts(db: Database) -> None:
    """A manual `bastion backup create` at 03:30 is the last run: the loop does not back up again today."""
    clock = FrozenClock(dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC))
    work = Work(db, clock)
    jobs = scheduler(db, clock, work, schedule="0 3 * * *", drill_schedule="")
    await jobs.tick()
    clock.advance(hours=1, minutes=30)
    await work.of(EventTag.BACKUP_CREATE)()  # the command line, another process
    work.calls.clear()
    for _ in range(3):
        clock.advance(hours=4)
        await jobs.tick()
    assert work.calls == []
    assert (await last_run(db, EventTag.BACKUP_CREATE, outcome="success")) is not None


async def test_a_failed_backup_is_retried_at_the_next_time_not_every_tick(db: Database) -> None:
    """The failure event is the last run; no prune after a failed create."""
    clock = FrozenClock(dt.datetime(2026, 3, 1, 2, 59, tzinfo=dt.UTC))
    work = Work(db, clock)
    work.fail.add("backup:create")
    jobs = scheduler(db, clock, work, schedule="0 3 * * *", drill_schedule="")
    await jobs.tick()
    clock.advance(minutes=1)
    await jobs.tick()
    for _ in range(10):
        clock.advance(minutes=1)
        await jobs.tick()
    assert work.calls == ["backup:create"]
    last = await last_run(db, EventTag.BACKUP_CREATE)
    assert last is not None
    assert last.outcome == "failure"
    assert await last_run(db, EventTag.BACKUP_CREATE, outcome="success") is None
    work.fail.clear()
    clock.advance(days=1)
    await jobs.tick()
    assert work.calls == ["backup:create", "backup:create", "backup:prune"]


async def test_a_failure_without_an_event_is_not_retried_every_tick(db: Database) -> None:
    clock = FrozenClock(dt.datetime(2026, 3, 1, 2, 59, tzinfo=dt.UTC))
    calls = 0

    async def crash() -> None:
        nonlocal calls
        calls += 1
        raise OSError("disk full")

    async def nothing() -> None:
        return None

    jobs = BackupScheduler(
        BackupSettings(schedule="0 3 * * *", drill_schedule=""), clock, db, create=crash, prune=nothing, drill=nothing
    )
    for _ in range(10):
        await jobs.tick()
        clock.advance(minutes=1)
    assert calls == 1


async def test_the_drill_on_its_own_schedule(db: Database) -> None:
    # 2026-03-01 is a Sunday; the default drill is Sundays at 04:30.
    clock = FrozenClock(dt.datetime(2026, 3, 1, 4, 0, tzinfo=dt.UTC))
    work = Work(db, clock)
    jobs = scheduler(db, clock, work, schedule="")
    await jobs.tick()
    clock.advance(minutes=30)
    await jobs.tick()
    assert work.calls == ["backup:drill"]
    clock.advance(days=6)
    await jobs.tick()
    assert work.calls == ["backup:drill"]
    clock.advance(days=1)
    await jobs.tick()
    assert work.calls == ["backup:drill", "backup:drill"]


async def test_the_loop_runs_the_tick_once_cluster_wide(db: Database, settings: Settings) -> None:
    """Two instances' loops: only the lease holder backs up."""
    clock = FrozenClock(dt.datetime(2026, 3, 1, 3, 0, tzinfo=dt.UTC))
    await Work(db, clock).of(EventTag.BACKUP_CREATE)()  # a backup at 03:00
    clock.advance(days=1, minutes=1)  # and now the next is due
    other_db = open_database(settings.sqlalchemy_url)
    work = Work(db, clock)
    loops = [
        backup_loop(
            BackupSettings(drill_schedule=""),
            clock,
            database,
            create=work.of(EventTag.BACKUP_CREATE),
            prune=work.of(EventTag.BACKUP_PRUNE),
            drill=work.of(EventTag.BACKUP_DRILL),
        )
        for database in (db, other_db)
    ]
    try:
        for loop in loops:
            await loop.start()
        for _ in range(200):
            if work.calls.count("backup:prune") >= 1:
                break
            await _pause()
        for _ in range(20):
            await _pause()
        assert work.calls == ["backup:create", "backup:prune"]
        assert sum(loop.holding for loop in loops) == 1
    finally:
        for loop in loops:
            await loop.stop()
        await other_db.close()


async def _pause() -> None:
    await asyncio.sleep(0.01)
