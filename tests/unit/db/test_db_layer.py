"""The data layer (``bastion.db``) on both backends: results, transactions,
group commit, budgets, claims under concurrency, and the failure paths."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bastion.audit import EventTag, Origin, record_event
from bastion.audit.models import AuditEvent
from bastion.clock import FrozenClock
from bastion.db import Database, DatabaseGone, MissingReference, QueryBudgetExceeded, open_database, transaction
from bastion.db.claims import claim, compare_and_set
from bastion.db.sqlite import SqliteDatabase

metadata = sa.MetaData()
things = sa.Table(
    "layer_things",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(40), unique=True),
    sa.Column("key", sa.Uuid, default=uuid.uuid4),
    sa.Column("used", sa.Boolean, default=False),
)
parts = sa.Table(
    "layer_parts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("thing_id", sa.Integer, sa.ForeignKey("layer_things.id", ondelete="CASCADE")),
)
_BY_NAME = sa.select(things).where(things.c.name == sa.bindparam("name"))
_SPEND = compare_and_set(
    things,
    things.c.id == sa.bindparam("id"),
    things.c.used.is_(False),
    values={things.c.used: True},
    returning=[things.c.id],
)
_ONE = sa.select(sa.literal(1))
ORIGIN = Origin(ip="192.0.2.1", request_id="req-00000001")


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'layer.db'}"
    else:
        url = os.environ.get("BASTION_TEST_DATABASE_URL", "")
        if not url.startswith("postgresql"):
            pytest.skip("BASTION_TEST_DATABASE_URL (PostgreSQL) is not set")
    database = open_database(url)
    await database.run_sync(_drop)
    await database.run_sync(_create)
    yield database
    await database.run_sync(_drop)
    await database.close()


def _create(connection: sa.Connection) -> None:
    metadata.create_all(connection)
    sa.Table.create(AuditEvent.__table__, connection)  # type: ignore[arg-type]


def _drop(connection: sa.Connection) -> None:
    metadata.drop_all(connection)
    sa.Table.drop(AuditEvent.__table__, connection, checkfirst=True)  # type: ignore[arg-type]


async def names(db: Database) -> list[str]:
    return [row.name for row in await db.all(sa.select(things.c.name).order_by(things.c.name))]


async def test_results_defaults_and_conversions(db: Database) -> None:
    async with transaction(db) as tx:
        await tx.execute(sa.insert(things), {"name": "a"})
        await tx.execute_many(sa.insert(things), [{"name": "b"}, {"name": "c"}])
        assert await tx.execute(sa.update(things).where(things.c.name == "a").values(name="z")) == 1
        assert await tx.execute(sa.update(things).where(things.c.name == "nope").values(name="y")) == 0
        assert await tx.value(sa.select(sa.func.count()).select_from(things)) == 3  # its own writes
    row = await db.one(_BY_NAME, {"name": "z"})
    assert row is not None
    assert isinstance(row.key, uuid.UUID)  # a Python-side default, applied, converted both ways
    assert row.used is False
    assert await db.one(_BY_NAME, {"name": "a"}) is None
    assert await names(db) == ["b", "c", "z"]
    with pytest.raises((sqlite3.IntegrityError, Exception)) as refused:
        async with transaction(db) as tx:
            await tx.execute(sa.insert(things), {"name": "b"})
    assert "unique" in str(refused.value).lower()
    assert await names(db) == ["b", "c", "z"]


async def test_a_foreign_key_refusal_is_missing_reference_and_nothing_else_is(db: Database) -> None:
    """V16.5.3: a change a foreign key refuses (the row it names is gone) is MissingReference on
    both backends, through execute and execute_many, so a domain can answer it (bastion.data:
    the owner erased meanwhile, 401); a unique violation stays the driver's own error."""
    async with transaction(db) as tx:
        await tx.execute(sa.insert(things), {"id": 1, "name": "a"})
        await tx.execute(sa.insert(parts), {"thing_id": 1})

    async def one() -> None:
        async with transaction(db) as tx:
            await tx.execute(sa.insert(parts), {"thing_id": 2})

    async def many() -> None:
        async with transaction(db) as tx:
            await tx.execute_many(sa.insert(parts), [{"thing_id": 1}, {"thing_id": 2}])

    async def duplicate() -> None:
        async with transaction(db) as tx:
            await tx.execute(sa.insert(things), {"name": "a"})

    for write in (one, many):
        with pytest.raises(MissingReference):
            await write()
    with pytest.raises(Exception) as refused:  # noqa: PT011 - either driver's own class
        await duplicate()
    assert not isinstance(refused.value, MissingReference)
    assert "unique" in str(refused.value).lower()
    assert await db.value(sa.select(sa.func.count()).select_from(parts)) == 1


async def test_a_transaction_that_raises_leaves_nothing_and_others_are_unharmed(db: Database) -> None:
    async def write(name: str, *, fail: bool) -> None:
        async with transaction(db) as tx:
            await tx.execute(sa.insert(things), {"name": name})
            await asyncio.sleep(0)
            if fail:
                raise RuntimeError("undo me")

    outcomes = await asyncio.gather(*(write(f"w{n}", fail=n % 3 == 1) for n in range(9)), return_exceptions=True)
    assert [type(o).__name__ for o in outcomes].count("RuntimeError") == 3
    assert await names(db) == sorted(f"w{n}" for n in range(9) if n % 3 != 1)


async def test_v11_concurrent_claims_of_one_credential_have_one_winner(db: Database) -> None:
    """Single-use under concurrency: twenty racing spends, one success."""
    async with transaction(db) as tx:
        await tx.execute(sa.insert(things), {"name": "token"})
    token = await db.one(_BY_NAME, {"name": "token"})
    assert token is not None

    async def spend() -> bool:
        async with transaction(db) as tx:
            return await claim(tx, _SPEND, {"id": token.id}) is not None

    assert sorted(await asyncio.gather(*(spend() for _ in range(20)))) == [False] * 19 + [True]


async def test_v16_2_1_events_commit_with_their_transaction_and_vanish_with_its_rollback(db: Database) -> None:
    """V16.2.1: an event describes a change that happened."""
    clock = FrozenClock()
    async with transaction(db) as tx:
        await tx.execute(sa.insert(things), {"name": "kept"})
        record_event(tx, clock, EventTag.ROLE_CHANGE, origin=ORIGIN, details={"n": "kept"})

    async def undone() -> None:
        async with transaction(db) as tx:
            record_event(tx, clock, EventTag.ROLE_CHANGE, origin=ORIGIN, details={"n": "undone"})
            raise RuntimeError

    with pytest.raises(RuntimeError):
        await undone()
    async with transaction(db) as tx:  # an event alone is a write too
        record_event(tx, clock, EventTag.ROLE_CHANGE, origin=ORIGIN, details={"n": "alone"})
    stored = await db.all(sa.select(AuditEvent.details).order_by(AuditEvent.id))
    assert [row.details["n"] for row in stored] == ["kept", "alone"]


async def test_sqlite_group_commit_shares_fsyncs_and_acknowledges_only_committed_work(tmp_path: Path) -> None:
    """Concurrent transactions share COMMITs; each returns only once its rows
    are visible to a connection of another process (that is, committed)."""
    path = tmp_path / "group.db"
    db = SqliteDatabase(f"sqlite+aiosqlite:///{path}")
    await db.run_sync(metadata.create_all)
    commits: list[str] = []
    async with transaction(db) as tx:  # opens the writer
        await tx.execute(sa.insert(things), {"name": "first"})
    db._writer.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)  # type: ignore[union-attr]
    outsider = sqlite3.connect(path)
    unacknowledged: list[str] = []

    async def create(name: str) -> None:
        async with transaction(db) as tx:
            await tx.execute(sa.insert(things), {"name": name})
        seen = outsider.execute("SELECT count(*) FROM layer_things WHERE name = ?", (name,)).fetchone()[0]
        if seen != 1:
            unacknowledged.append(name)

    await asyncio.gather(*(create(f"c{n}") for n in range(32)))
    outsider.close()
    assert unacknowledged == []
    assert 1 <= len(commits) < 32  # grouped: fewer fsyncs than transactions
    assert len(await names(db)) == 33
    await db.close()


async def test_sqlite_a_write_waiting_for_another_process_does_not_block_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    db = SqliteDatabase(f"sqlite+aiosqlite:///{path}")
    await db.run_sync(metadata.create_all)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock

    async def write() -> None:
        async with transaction(db) as tx:
            await tx.execute(sa.insert(things), {"name": "waits"})

    writer = asyncio.create_task(write())
    await asyncio.sleep(0.2)
    assert not writer.done()
    assert await names(db) == []  # readers are not held up either
    holder.execute("COMMIT")
    holder.close()
    await asyncio.wait_for(writer, 10)
    assert await names(db) == ["waits"]
    await db.close()


async def test_sqlite_cancelled_writers_leave_the_writer_usable(tmp_path: Path) -> None:
    """A request cancelled while it waits for the writer, or while it holds
    it, neither deadlocks the next writers nor loses what others committed."""
    db = SqliteDatabase(f"sqlite+aiosqlite:///{tmp_path / 'cancel.db'}")
    await db.run_sync(metadata.create_all)
    release = asyncio.Event()

    async def holds(name: str) -> None:
        async with transaction(db) as tx:
            await tx.execute(sa.insert(things), {"name": name})
            await release.wait()

    holding = asyncio.create_task(holds("held"))
    waiting = [asyncio.create_task(holds(f"q{n}")) for n in range(3)]
    await asyncio.sleep(0.05)
    waiting[1].cancel()
    holding.cancel()
    release.set()
    await asyncio.gather(holding, *waiting, return_exceptions=True)
    async with asyncio.timeout(5):
        async with transaction(db) as tx:
            await tx.execute(sa.insert(things), {"name": "after"})
    assert await names(db) == ["after", "q0", "q2"]
    await db.close()


async def test_sqlite_a_statement_over_its_budget_is_stopped(tmp_path: Path) -> None:
    db = SqliteDatabase(f"sqlite+aiosqlite:///{tmp_path / 'budget.db'}", budget=0.05)
    n = sa.select(sa.literal(1).label("i")).cte("n", recursive=True)
    n = n.union_all(sa.select(n.c.i + 1).where(n.c.i < 10**9))
    endless = sa.select(sa.func.count()).select_from(n)
    with pytest.raises(QueryBudgetExceeded):
        await db.value(endless)
    assert await db.value(_ONE) == 1  # the connection serves on
    await db.close()


async def test_postgres_a_statement_over_its_budget_is_stopped() -> None:
    url = os.environ.get("BASTION_TEST_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        pytest.skip("BASTION_TEST_DATABASE_URL (PostgreSQL) is not set")
    from bastion.db.postgres import PostgresDatabase

    db = PostgresDatabase(url, budget=0.05)
    with pytest.raises(QueryBudgetExceeded):
        await db.value(sa.select(sa.func.pg_sleep(5)))
    assert await db.value(_ONE) == 1
    await db.close()


async def test_sqlite_a_replaced_database_file_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "gone.db"
    db = SqliteDatabase(f"sqlite+aiosqlite:///{path}")
    await db.run_sync(metadata.create_all)
    async with transaction(db) as tx:
        await tx.execute(sa.insert(things), {"name": "before"})
    path.rename(tmp_path / "moved.db")
    sqlite3.connect(path).close()  # a new, empty file where ours was
    with pytest.raises(DatabaseGone):
        async with transaction(db) as tx:
            await tx.execute(sa.insert(things), {"name": "lost"})
    assert not await db.ping()
    await db.close()


async def test_sqlite_a_database_that_cannot_use_wal_is_refused(tmp_path: Path) -> None:
    """Reads run on the event loop only because WAL readers never wait: a
    database where WAL cannot be enabled (here: SQLite's no-locking VFS, as on
    a filesystem without shared-memory locks) is refused with a message that
    says why."""
    from bastion.db.sqlite import connect

    with pytest.raises(sqlite3.OperationalError, match="write-ahead logging"):
        connect(f"file:{tmp_path / 'no-wal.db'}?vfs=unix-none", uri=True)


async def test_in_over_a_list_binds_one_parameter_per_value(db: Database) -> None:
    async with transaction(db) as tx:
        await tx.execute_many(sa.insert(things), [{"name": n} for n in ("a", "b", "c", "d")])
    listed = sa.select(things.c.name).where(things.c.name.in_(["a", "c", "x"])).order_by(things.c.name)
    assert [row.name for row in await db.all(listed)] == ["a", "c"]
    chosen = sa.select(things.c.name).where(
        things.c.name.in_(sa.bindparam("names", expanding=True)), things.c.used == sa.bindparam("used")
    )
    found = await db.all(
        chosen.order_by(things.c.name), {"names": ["b", "d", "'; DROP TABLE layer_things; --"], "used": False}
    )
    assert [row.name for row in found] == ["b", "d"]
    keys = [row.key for row in await db.all(sa.select(things.c.key))]
    by_key = sa.select(things.c.name).where(things.c.key.in_(keys[:2]))
    assert len(await db.all(by_key)) == 2  # each value converted as its column's type wants


async def test_numbers_read_back_as_numbers(db: Database) -> None:
    """asyncpg's numeric types pick their conversion by the result's type code, which
    a statement compiled ahead of any result must name (float8, numeric)."""
    numbers = sa.Table("layer_numbers", sa.MetaData(), sa.Column("x", sa.Double), sa.Column("d", sa.Numeric(10, 2)))
    await db.run_sync(numbers.create)
    try:
        async with transaction(db) as tx:
            await tx.execute(sa.insert(numbers), {"x": 2.5, "d": 1.25})
        row = await db.one(sa.select(numbers))
        assert row is not None
        assert (row.x, float(row.d)) == (2.5, 1.25)
    finally:
        await db.run_sync(numbers.drop)


async def test_json_columns_keep_integers_past_64_bits(db: Database) -> None:
    big = {"n": 123456789012345678901234567890, "s": "ünï"}
    async with transaction(db) as tx:
        record_event(tx, FrozenClock(), EventTag.ROLE_CHANGE, origin=ORIGIN, details=big)
        record_event(tx, FrozenClock(), EventTag.ROLE_CHANGE, origin=ORIGIN, details={"n": 1})
    stored = [row.details for row in await db.all(sa.select(AuditEvent.details).order_by(AuditEvent.id))]
    assert stored == [big, {"n": 1}]
