"""SQLite on the standard library's ``sqlite3``: reads on the event loop, writes group-committed.

Two connections to the file, in WAL mode with ``synchronous=FULL``:

- the **reader** runs every statement outside a write, on the event loop's
  thread. In WAL mode a reader never waits for a writer, and a short
  statement takes microseconds: less than a hop to a thread would;
- the **writer** belongs to one transaction at a time: the first change of a
  transaction takes the writer (an asyncio lock, in arrival order), and from
  then on all its statements, reads included, run on it, inline too. Each
  transaction runs inside a SAVEPOINT of one outer transaction, so one that
  fails rolls back alone.

**Group commit.** A transaction that ends does not commit by itself when
others are queued for the writer: it releases its savepoint and hands the
writer on, and the last of the group (or the 64th) commits for all of them.
That COMMIT, the fsync, runs on the writer thread, and every transaction of
the group is acknowledged only once it returns: nothing is reported done
before it is on disk, and a group pays one fsync. ``BEGIN IMMEDIATE``, which
may wait for another process's write lock (``busy_timeout``), runs on that
thread too, so the event loop never waits for a lock.

Every statement has a budget (``STATEMENT_BUDGET_SECONDS``), enforced by
SQLite's progress handler; the writer's lock is not held longer than that
per statement either.

The file must stay the one first opened (``SqliteFile``): SQLite would keep
writing to a deleted or replaced file and lose every write at the next start.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, make_url
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import ClauseElement

from bastion.db.database import (
    STATEMENT_BUDGET_SECONDS,
    DatabaseGone,
    Deferred,
    MissingReference,
    Params,
    QueryBudgetExceeded,
)
from bastion.db.statements import Compiled, Statements, json_text
from bastion.logging import get_logger

log = get_logger("bastion.db")
T = TypeVar("T")

# A writer waits this long for its turn (or another process's lock), then fails.
WRITER_WAIT_SECONDS = 30.0
# At most this many transactions share one commit, so that none waits long.
GROUP_LIMIT = 64
# The progress handler runs every this many SQLite VM steps (a few µs).
_PROGRESS_STEPS = 2000


class SqliteFile:
    """The database file first opened, checked as each group of writes begins and
    before its COMMIT (and by reads at most once a second).

    SQLite keeps writing to a file that was unlinked (or renamed over) while
    open: every write would be acknowledged and lost at the next start. So
    the file at the path must still be the one first opened (same device and
    inode) and writable, or the transaction fails with ``DatabaseGone`` (503,
    and /readyz says not ready) until the process is restarted.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.identity: tuple[int, int] | None = None
        self.reported = False
        self._checked_at = float("-inf")

    def _identity(self) -> tuple[int, int] | None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return info.st_dev, info.st_ino

    def opened(self) -> None:
        self.identity = self._identity()

    def check(self) -> None:
        self._checked_at = time.monotonic()
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

    def check_now_and_then(self) -> None:
        if time.monotonic() - self._checked_at > 1.0:
            self.check()


class _Budget:
    """SQLite's progress handler: stop a statement that runs past its deadline."""

    def __init__(self) -> None:
        self.deadline = float("inf")

    def __call__(self) -> int:
        return 1 if time.monotonic() > self.deadline else 0

    @contextmanager
    def running(self, seconds: float) -> Iterator[None]:
        """One statement, stopped (QueryBudgetExceeded) once it runs past ``seconds``;
        a foreign key's refusal is MissingReference (every statement runs in here)."""
        self.deadline = time.monotonic() + seconds
        try:
            yield
        except sqlite3.OperationalError as exc:
            if str(exc) == "interrupted":
                raise QueryBudgetExceeded from None
            raise
        except sqlite3.IntegrityError as exc:
            if exc.sqlite_errorcode == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
                raise MissingReference from None
            raise
        finally:
            self.deadline = float("inf")


def connect(path: Path | str, *, uri: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode with durable commits; transactions are begun explicitly."""
    connection = sqlite3.connect(
        path, timeout=WRITER_WAIT_SECONDS, isolation_level=None, check_same_thread=False, uri=uri
    )
    mode = str(connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
    if mode != "wal":
        connection.close()
        raise sqlite3.OperationalError(
            f"SQLite cannot use write-ahead logging for this database (journal mode stays {mode!r}); "
            "keep the data directory on a local, writable filesystem"
        )
    # synchronous=FULL makes every commit (auth and audit writes above all) survive a power cut.
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    # Deleted content is overwritten with zeros, in the file and the log, so
    # an erased user's rows (and any deleted row) leave nothing readable in
    # free pages; wal_checkpoint(TRUNCATE) after an erasure (``scrub``) then
    # drops the log's older copies of those pages.
    connection.execute("PRAGMA secure_delete=ON")
    connection.execute(f"PRAGMA busy_timeout={int(WRITER_WAIT_SECONDS * 1000)}")
    return connection


class SqliteDatabase:
    """One SQLite file, used from one event loop (each worker process has its own)."""

    def __init__(self, url: str, *, budget: float = STATEMENT_BUDGET_SECONDS) -> None:
        database = make_url(url).database
        if not database or database == ":memory:" or database.startswith("file:"):
            raise ValueError("Bastion's SQLite database must be a file path")
        self.url = url
        self.path = Path(database)
        self.dialect = SQLiteDialect_pysqlite(json_serializer=json_text)
        self.statements = Statements(self.dialect)
        self.file = SqliteFile(self.path)
        self.budget = budget
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._reader_budget, self._writer_budget = _Budget(), _Budget()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="bastion-db-writer")
        self._turn = asyncio.Lock()
        self._queued = 0  # transactions waiting for the writer
        self._group_open = False  # the writer is inside the outer transaction
        self._group: list[asyncio.Future[None]] = []
        self._schema_engine: AsyncEngine | None = None
        self._settling: set[asyncio.Task[None]] = set()

    # --- connections ------------------------------------------------------

    def _open(self) -> None:
        reader, writer = connect(self.path), connect(self.path)
        reader.set_progress_handler(self._reader_budget, _PROGRESS_STEPS)
        writer.set_progress_handler(self._writer_budget, _PROGRESS_STEPS)
        self._reader, self._writer = reader, writer
        self.file.opened()

    @property
    def reader(self) -> sqlite3.Connection:
        if self._reader is None:
            self._open()
        self.file.check_now_and_then()
        return self._reader  # type: ignore[return-value]

    def run(
        self, connection: sqlite3.Connection, budget: _Budget, statement: ClauseElement, params: Params
    ) -> tuple[Compiled, list[Any], int]:
        """Run one statement to the end: (its compiled form, its raw rows, rows changed)."""
        compiled = self.statements.compiled(statement, params)
        with budget.running(self.budget):
            cursor = connection.execute(*compiled.bind(params))
            rows = cursor.fetchall()
        return compiled, rows, cursor.rowcount

    async def one(self, statement: ClauseElement, params: Params = None) -> Any | None:
        compiled, rows, _ = self.run(self.reader, self._reader_budget, statement, params)
        return compiled.row(rows[0]) if rows else None

    async def all(self, statement: ClauseElement, params: Params = None) -> list[Any]:
        compiled, rows, _ = self.run(self.reader, self._reader_budget, statement, params)
        return compiled.rows(rows)

    async def value(self, statement: ClauseElement, params: Params = None) -> Any:
        compiled, rows, _ = self.run(self.reader, self._reader_budget, statement, params)
        return compiled.row(rows[0])[0] if rows else None

    def begin(self) -> SqliteTransaction:
        return SqliteTransaction(self)

    # --- the writer ---------------------------------------------------------

    async def _on_thread(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the writer thread; if the caller is cancelled meanwhile, still wait for it."""
        future = asyncio.get_running_loop().run_in_executor(self._thread, work)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            raise

    async def _wait_turn(self) -> None:
        """Queue for the writer, in arrival order."""
        self._queued += 1
        try:
            if self._turn.locked():
                async with asyncio.timeout(WRITER_WAIT_SECONDS):
                    await self._turn.acquire()
            else:
                await self._turn.acquire()
        except TimeoutError:
            self._settle_later()
            raise sqlite3.OperationalError("database is locked") from None
        except BaseException:
            self._settle_later()
            raise
        finally:
            self._queued -= 1

    def _settle_later(self) -> None:
        """Make sure an open group gets committed though whoever was to commit it left."""

        async def settle() -> None:
            async with self._turn:
                if self._group_open and not self._queued:
                    await self._commit()

        task = asyncio.get_running_loop().create_task(settle())
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def take_writer(self) -> sqlite3.Connection:
        """Wait for this transaction's turn at the writer, inside the group's outer transaction."""
        await self._wait_turn()
        try:
            if self._writer is None:
                self._open()
            writer: sqlite3.Connection = self._writer  # type: ignore[assignment]
            if not self._group_open:
                self.file.check()  # once per group here, and again just before its COMMIT
                try:
                    await self._on_thread(lambda: writer.execute("BEGIN IMMEDIATE"))
                finally:
                    self._group_open = writer.in_transaction
            writer.execute("SAVEPOINT tx")
        except BaseException:
            self._turn.release()
            self._settle_later()
            raise
        return writer

    async def hand_on(self, *, keep: bool) -> None:
        """End the turn of the transaction holding the writer: keep its changes
        (``keep``) or undo them, then commit the group, or leave that to the
        next in line. Returns once the changes kept are durable."""
        writer = self._writer
        assert writer is not None  # noqa: S101 - only a transaction holding the writer calls this
        acknowledged = asyncio.get_running_loop().create_future()
        try:
            if not keep:
                writer.execute("ROLLBACK TO tx")
            writer.execute("RELEASE tx")
            self._group.append(acknowledged)
        except BaseException:
            try:
                await self._commit()
            finally:
                self._turn.release()
            raise
        if self._queued and len(self._group) < GROUP_LIMIT:
            self._turn.release()  # the next in line commits for both of us
        else:
            try:
                await self._commit()
            finally:
                self._turn.release()
        await acknowledged

    def _durably_commit(self, writer: sqlite3.Connection) -> None:
        """COMMIT (the fsync), on the writer thread, if the file is still ours."""
        self.file.check()
        writer.commit()

    async def _commit(self) -> None:
        """Commit the outer transaction on the writer thread and answer its group (the turn is held)."""
        group, self._group = self._group, []
        writer = self._writer
        failure: BaseException | None = None
        try:
            if self._group_open and writer is not None:
                await self._on_thread(lambda: self._durably_commit(writer))
        except BaseException as exc:  # noqa: BLE001 - every member of the group is told
            failure = exc
            if writer is not None and writer.in_transaction:
                await self._on_thread(writer.rollback)
        finally:
            self._group_open = writer is not None and writer.in_transaction
            for acknowledged in group:
                if acknowledged.done():
                    continue
                if failure is None:
                    acknowledged.set_result(None)
                else:
                    acknowledged.set_exception(failure)

    # --- schema work and the rest -------------------------------------------

    async def run_sync(self, work: Callable[[Connection], T]) -> T:
        """``work`` on SQLAlchemy's own connection (aiosqlite), while no transaction of ours writes."""
        await self._wait_turn()
        try:
            if self._writer is None:
                self._open()  # ours first, so the file is in WAL mode before anyone else writes
            if self._group_open:
                await self._commit()
            if self._schema_engine is None:
                self._schema_engine = create_async_engine(self.url, connect_args={"timeout": WRITER_WAIT_SECONDS})
            async with self._schema_engine.begin() as connection:
                return await connection.run_sync(work)
        finally:
            self._turn.release()

    async def scrub(self, tables: Sequence[str]) -> bool:
        """After deletes that must leave nothing readable (an erasure): checkpoint the
        write-ahead log into the file and truncate it to nothing, so no older copy of
        a page holding deleted rows stays in the log. ``secure_delete`` has zeroed
        the rows themselves. False if another connection's read kept the log from
        being truncated (within ``busy_timeout``); a later scrub finishes it."""
        del tables  # the whole log goes, whatever the tables
        await self._wait_turn()
        try:
            if self._writer is None:
                self._open()
            if self._group_open:
                await self._commit()
            writer: sqlite3.Connection = self._writer  # type: ignore[assignment]
            busy, _, _ = await self._on_thread(lambda: writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
        finally:
            self._turn.release()
        return int(busy) == 0

    async def ping(self) -> bool:
        try:
            self.file.check() if self._reader is not None else None
            answer: object = self.reader.execute("SELECT 1").fetchone()
        except (sqlite3.Error, DatabaseGone, OSError):
            return False
        return answer == (1,)

    async def close(self) -> None:
        async with self._turn:
            if self._group_open:
                await self._commit()
        if self._schema_engine is not None:
            await self._schema_engine.dispose()
        for connection in (self._reader, self._writer):
            if connection is not None:
                connection.close()
        self._reader = self._writer = None
        self._thread.shutdown(wait=True)


class SqliteTransaction:
    """Reads on the reader until the first change; from then on, everything on the writer."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        self.dialect = db.dialect
        self._writer: sqlite3.Connection | None = None
        self._deferred = Deferred()

    def _connection(self) -> tuple[sqlite3.Connection, _Budget]:
        if self._writer is not None:
            return self._writer, self.db._writer_budget
        return self.db.reader, self.db._reader_budget

    async def _writing(self) -> tuple[sqlite3.Connection, _Budget]:
        if self._writer is None:
            self._writer = await self.db.take_writer()
        return self._writer, self.db._writer_budget

    async def one(self, statement: ClauseElement, params: Params = None) -> Any | None:
        compiled, rows, _ = self.db.run(*self._connection(), statement, params)
        return compiled.row(rows[0]) if rows else None

    async def all(self, statement: ClauseElement, params: Params = None) -> list[Any]:
        compiled, rows, _ = self.db.run(*self._connection(), statement, params)
        return compiled.rows(rows)

    async def value(self, statement: ClauseElement, params: Params = None) -> Any:
        compiled, rows, _ = self.db.run(*self._connection(), statement, params)
        return compiled.row(rows[0])[0] if rows else None

    async def execute(self, statement: ClauseElement, params: Params = None) -> int:
        _, _, changed = self.db.run(*await self._writing(), statement, params)
        return changed

    async def changed(self, statement: ClauseElement, params: Params = None) -> Any | None:
        compiled, rows, _ = self.db.run(*await self._writing(), statement, params)
        return compiled.row(rows[0]) if rows else None

    async def execute_many(self, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        writer, budget = await self._writing()
        compiled = self.db.statements.compiled(statement, rows[0])
        bound = [compiled.bind(row) for row in rows]
        with budget.running(self.db.budget):
            writer.executemany(bound[0][0], [arguments for _, arguments in bound])

    def defer(self, statement: ClauseElement, row: Mapping[str, Any]) -> None:
        self._deferred.add(statement, row)

    async def close(self, *, commit: bool) -> None:
        try:
            if commit:
                for statement, rows in self._deferred.take():
                    await self.execute_many(statement, rows)
        except BaseException:
            commit = False
            raise
        finally:
            self._deferred.take()
            if self._writer is not None:
                self._writer = None
                await self.db.hand_on(keep=commit)
