"""The async SQLAlchemy engine for SQLite (embedded default) or PostgreSQL."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from bastion.db.sqlite import install as one_hop_cursors


class Base(DeclarativeBase):
    """Every Bastion table derives from this."""


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        one_hop_cursors()
        engine = create_async_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer (bastion.db.sqlite runs reads on
    # the event loop because of it); synchronous=FULL makes every commit
    # (auth and audit writes above all) survive a power cut.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    mode = str(cursor.fetchone()[0]).lower()
    if mode not in ("wal", "memory"):  # memory: an in-memory database, nothing to share
        cursor.close()
        raise sqlite3.OperationalError(
            f"SQLite cannot use write-ahead logging for this database (journal mode stays {mode!r}); "
            "keep the data directory on a local, writable filesystem"
        )
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


async def ping(engine: AsyncEngine) -> bool:
    """Whether the database answers a trivial query."""
    try:
        async with engine.connect() as connection:
            await connection.execute(select(1))
    except Exception:  # noqa: BLE001 - any failure means "not ready"
        return False
    return True
