"""SQLite statements without a thread round trip where none is needed.

aiosqlite runs every call of a cursor (create, execute, fetch, close) as its
own round trip to the connection's worker thread, and SQLAlchemy's adapter
makes four of them per statement. Each round trip costs a thread wake-up and
an event-loop wake-up, which measured as most of the time of an
authenticated request. This cursor does better in two steps:

- a statement that cannot wait for a lock runs inline, on the event loop's
  thread: a SELECT outside a transaction (in WAL mode readers never wait for
  the writer), and any statement once the connection already holds its
  write transaction. These take microseconds; the thread hop took longer.
- any other statement (the first write of a transaction, which may wait
  for the write lock up to ``busy_timeout``) and every COMMIT (the fsync)
  still run on the worker thread, in one round trip each.

A rollback or commit of a connection with no open transaction is skipped:
it had nothing to do but cost a round trip at the end of every read.

Write transactions of one process queue on an asyncio lock (one per engine
and event loop) from their first write to their commit or rollback. Without
it, concurrent writers met in SQLite's busy handler, which sleeps 1 ms, then
2, 5, 10… between retries: eight concurrent creates ran slower than one at
a time. Waiting for the lock times out like ``busy_timeout`` would.

It plugs into SQLAlchemy's aiosqlite adapter through its documented class
attribute ``_cursor_cls`` and uses aiosqlite's ``Connection._execute`` (the
function every aiosqlite method is built on). Both are private; the
versions are pinned in the lock files, and the whole suite runs through it.
The connection is opened with ``check_same_thread=False`` so both threads may
use it; they never do at once, since every statement is awaited in turn.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection, AsyncAdapt_aiosqlite_cursor
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

Outcome = tuple[Any, list[Any], int, int | None]

# As long as busy_timeout (engine.py): a writer waits this long, then fails.
WRITER_WAIT_SECONDS = 30.0
_writer_locks: weakref.WeakKeyDictionary[Any, dict[asyncio.AbstractEventLoop, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)
_held: dict[sqlite3.Connection, asyncio.Lock] = {}
# The statements before which Python's sqlite3 opens a transaction (BEGIN).
_BEGINS_A_WRITE = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _take_writer_lock(adapted: Any, connection: sqlite3.Connection) -> None:
    """Queue for this engine's writer lock (called from SQLAlchemy's greenlet)."""
    if connection in _held:
        return
    per_loop = _writer_locks.setdefault(adapted.dbapi, {})
    lock = per_loop.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    try:
        await_(asyncio.wait_for(lock.acquire(), WRITER_WAIT_SECONDS))
    except TimeoutError:
        raise sqlite3.OperationalError("database is locked") from None
    _held[connection] = lock


def _release_writer_lock(connection: sqlite3.Connection | None) -> None:
    lock = _held.pop(connection, None) if connection is not None else None
    if lock is not None:
        lock.release()


def _run(connection: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> Outcome:
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        # No aiosqlite cursor is opened (that alone is a round trip).
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    async def _run(self, operation: Any, parameters: Any, many: bool) -> None:
        async with self._adapt_connection._execute_mutex:
            self._store(await self._connection._execute(_run, self._connection._conn, operation, parameters, many))

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        connection: sqlite3.Connection = self._connection._conn
        verb = operation.lstrip()[:7].upper()
        if connection.in_transaction or verb.startswith("SELECT"):
            # SQLAlchemy requires an await here; this one never suspends.
            return await_(self._inline(connection, operation, parameters))
        if verb.startswith(_BEGINS_A_WRITE):
            run = super().execute
            return self._first_write(connection, lambda: run(operation, parameters))
        return super().execute(operation, parameters)  # DDL, PRAGMA: no transaction, no writer lock

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        connection: sqlite3.Connection = self._connection._conn
        if connection.in_transaction or not operation.lstrip()[:7].upper().startswith(_BEGINS_A_WRITE):
            return super().executemany(operation, seq_of_parameters)
        many = super().executemany
        return self._first_write(connection, lambda: many(operation, seq_of_parameters))

    def _first_write(self, connection: sqlite3.Connection, run: Callable[[], Any]) -> Any:
        """Run a statement that may begin a write transaction, holding the writer lock if it does."""
        _take_writer_lock(self._adapt_connection, connection)
        try:
            return run()
        finally:
            if not connection.in_transaction:  # the write failed before or at BEGIN
                _release_writer_lock(connection)

    async def _inline(self, connection: sqlite3.Connection, operation: Any, parameters: Any) -> None:
        self._store(_run(connection, operation, parameters, many=False))

    def _store(self, outcome: Outcome) -> None:
        description, rows, self._rowcount, self._lastrowid = outcome
        self._description = description
        self._rows = collections.deque(rows)

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._run(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._run(operation, seq_of_parameters, many=True)

    async def _async_soft_close(self) -> None:
        """Nothing is open between statements."""

    def close(self) -> None:
        self._rows.clear()


def _skip_when_idle(end: Callable[[Any], None]) -> Callable[[Any], None]:
    """``commit``/``rollback`` that costs nothing when no transaction is open,
    and that hands the writer lock on once the transaction is over."""

    def ending(adapted: Any) -> None:
        connection: sqlite3.Connection | None = adapted._connection._connection
        try:
            if connection is not None and connection.in_transaction:
                end(adapted)
        finally:
            if connection is None or not connection.in_transaction:
                _release_writer_lock(connection)

    ending.__wrapped__ = end  # type: ignore[attr-defined]
    return ending


def _releasing(close: Callable[[Any], None]) -> Callable[[Any], None]:
    """``close``/``terminate`` that never leaves the writer lock held."""

    def closing(adapted: Any) -> None:
        connection: sqlite3.Connection | None = adapted._connection._connection
        try:
            close(adapted)
        finally:
            _release_writer_lock(connection)

    closing.__wrapped__ = close  # type: ignore[attr-defined]
    return closing


def install() -> None:
    """Make SQLAlchemy's aiosqlite connections use OneHopCursor (idempotent)."""
    adapter = AsyncAdapt_aiosqlite_connection
    if adapter._cursor_cls is not OneHopCursor:
        adapter._cursor_cls = OneHopCursor
        adapter.commit = _skip_when_idle(adapter.commit)  # type: ignore[method-assign,assignment]
        adapter.rollback = _skip_when_idle(adapter.rollback)  # type: ignore[method-assign,assignment]
        adapter.close = _releasing(adapter.close)  # type: ignore[method-assign,assignment]
        adapter.terminate = _releasing(adapter.terminate)  # type: ignore[method-assign,assignment]
