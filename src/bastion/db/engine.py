"""The async SQLAlchemy engine for SQLite (embedded default) or PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event, make_url, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from bastion.db.sqlite import install as one_hop_cursors
from bastion.logging import get_logger

log = get_logger("bastion.db")


class Base(DeclarativeBase):
    """Every Bastion table derives from this."""


class DatabaseGone(Exception):
    """The SQLite file this process opened was deleted, replaced or made read-only.

    The app answers it as 503 (``create_app`` maps it to the NotReady problem).
    """


class SqliteFile:
    """The database file an engine opened, checked at the start of every transaction.

    SQLite keeps writing to a file that was unlinked (or renamed over) while
    open: every write would be acknowledged and lost at the next start. So
    the file at the path must still be the one first opened (same device and
    inode) and writable, or the transaction fails with ``DatabaseGone`` (503,
    and /readyz says not ready) until the process is restarted. A stat per
    transaction is the price.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.identity: tuple[int, int] | None = None
        self.reported = False

    def _identity(self) -> tuple[int, int] | None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return info.st_dev, info.st_ino

    def opened(self, *_: Any) -> None:
        """A connection opened the file: the first one fixes which file is ours."""
        if self.identity is None:
            self.identity = self._identity()

    def check(self, *_: Any) -> None:
        if self.identity is None:
            return  # nothing opened yet: the first connection creates or finds the file
        current = self._identity()
        if current == self.identity and os.access(self.path, os.W_OK):
            return
        if not self.reported:
            self.reported = True
            log.error(
                "the database file was deleted, replaced or made read-only; refusing transactions until restarted",
                path=str(self.path),
            )
        raise DatabaseGone


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        one_hop_cursors()
        engine = create_async_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            watched = SqliteFile(Path(database))
            event.listen(engine.sync_engine, "connect", watched.opened)
            event.listen(engine.sync_engine, "begin", watched.check)
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
