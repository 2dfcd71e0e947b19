"""The one-hop SQLite cursor: same results as a DB-API cursor, one thread round trip per statement."""

from __future__ import annotations

from pathlib import Path

import aiosqlite.core
import pytest
import sqlalchemy as sa

from bastion.db import create_engine

metadata = sa.MetaData()
things = sa.Table(
    "things", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(20))
)


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


async def test_one_round_trip_per_statement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
        async with engine.connect() as connection:
            monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counting)
            await connection.execute(sa.select(things.c.id).where(things.c.id == 1))
            assert calls == 1  # aiosqlite's own cursor takes four
    finally:
        await engine.dispose()
