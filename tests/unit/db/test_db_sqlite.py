"""The SQLite cursor: same results as a DB-API cursor, thread round trips only where a statement may wait."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiosqlite.core
import pytest
import sqlalchemy as sa

from bastion.db import create_engine

metadata = sa.MetaData()
things = sa.Table("things", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(20)))


async def test_results_rowcount_and_lastrowid(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            inserted = await connection.execute(things.insert().values(name="a"))
            assert inserted.inserted_primary_key == (1,)
            await connection.execute(things.insert(), [{"name": "b"}, {"name": "c"}])  # executemany
            claimed = await connection.execute(things.update().where(things.c.name == "a").values(name="z"))
            assert claimed.rowcount == 1  # refresh-token and recovery-code claims rely on this
            missed = await connection.execute(things.update().where(things.c.name == "nope").values(name="y"))
            assert missed.rowcount == 0
            rows = (await connection.execute(sa.select(things.c.name).order_by(things.c.id))).scalars().all()
            assert rows == ["z", "b", "c"]
            with pytest.raises(sa.exc.IntegrityError):
                await connection.execute(things.insert().values(id=1, name="dup"))
    finally:
        await engine.dispose()


async def test_round_trips_only_where_a_statement_may_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads run inline; the first write of a transaction (it may wait for the
    lock) and the commit (the fsync) take one thread round trip each; ending
    a read-only connection takes none."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    calls = 0
    original = aiosqlite.core.Connection._execute

    async def counting(self: aiosqlite.core.Connection, fn: object, *args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await original(self, fn, *args, **kwargs)

    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counting)
        async with engine.connect() as connection:
            await connection.execute(sa.select(things.c.id).where(things.c.id == 1))
        assert calls == 0
        async with engine.begin() as connection:
            await connection.execute(things.insert().values(name="a"))
            assert calls == 1
            await connection.execute(things.insert().values(name="b"))
            await connection.execute(sa.select(things.c.id))
            assert calls == 1
        assert calls == 2  # the commit
        async with engine.connect() as connection:
            assert (await connection.execute(sa.select(sa.func.count()).select_from(things))).scalar() == 2
    finally:
        await engine.dispose()


async def test_a_write_waiting_for_the_lock_does_not_block_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock

        async def write() -> None:
            async with engine.begin() as connection:
                await connection.execute(things.insert().values(name="waits"))

        writer = asyncio.create_task(write())
        await asyncio.sleep(0.2)  # run inline, the write would hold the loop here until busy_timeout
        assert not writer.done()
        async with engine.connect() as connection:  # readers are not held up either
            assert (await connection.execute(sa.select(sa.func.count()).select_from(things))).scalar() == 0
        holder.execute("COMMIT")
        holder.close()
        await asyncio.wait_for(writer, 10)
        async with engine.connect() as connection:
            assert (await connection.execute(sa.select(things.c.name))).scalars().all() == ["waits"]
    finally:
        await engine.dispose()


async def test_writers_of_one_process_queue_instead_of_meeting_in_sqlite(tmp_path: Path) -> None:
    """Concurrent write transactions all commit, one at a time, without SQLite's
    busy handler (set to fail at once here); a failed first write and a
    rollback hand the writer lock on (no writer is left waiting)."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    sa.event.listen(engine.sync_engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA busy_timeout=0"))
    inside = 0
    most = 0
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)

        async def write(name: str) -> None:
            nonlocal inside, most
            async with engine.begin() as connection:
                await connection.execute(things.insert().values(name=name))
                inside += 1
                most = max(most, inside)
                await asyncio.sleep(0.01)  # other writers get the loop meanwhile
                inside -= 1

        await asyncio.wait_for(asyncio.gather(*(write(f"w{n}") for n in range(8))), 10)
        assert most == 1
        with pytest.raises(sa.exc.IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(things.insert().values(id=1, name="duplicate id"))
        async with engine.connect() as connection:
            await connection.execute(things.insert().values(name="rolled back"))
            await connection.rollback()
        await asyncio.wait_for(write("after"), 5)
        async with engine.connect() as connection:
            names = (await connection.execute(sa.select(things.c.name))).scalars().all()
        assert sorted(names) == sorted([f"w{n}" for n in range(8)] + ["after"])
    finally:
        await engine.dispose()


async def test_a_database_that_cannot_use_wal_is_refused(tmp_path: Path) -> None:
    """Reads run on the event loop only because WAL readers never wait: a
    database where WAL cannot be enabled (here: SQLite's no-locking VFS, as on
    a filesystem without shared-memory locks) is refused with a message that
    says why, not served with readers that may block the loop."""
    path = tmp_path / "no-wal.sqlite"
    engine = create_engine(f"sqlite+aiosqlite:///file:{path}?vfs=unix-none&uri=true")
    try:
        with pytest.raises(sa.exc.OperationalError, match="write-ahead logging"):
            async with engine.connect() as connection:
                await connection.execute(sa.select(1))
    finally:
        await engine.dispose()
