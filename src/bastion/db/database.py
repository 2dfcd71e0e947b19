"""The database every request goes through: reads, transactions, schema work.

``Database`` is what a service sees, whichever the backend:

- reads outside a transaction: ``await db.one(statement, params)``, ``all``,
  ``value``;
- a transaction: ``async with db.transaction() as tx:`` with the same reads
  plus ``execute`` (rows changed) and ``execute_many``; it commits when the
  block ends and rolls back if it raises. Its audit events
  (``bastion.audit.record_event``) are inserted when it ends, in the same
  transaction;
- schema work (collections, rewraps): ``await db.run_sync(fn)``, ``fn`` a
  function of a SQLAlchemy ``Connection``, run in a transaction of its own.

Statements are SQLAlchemy Core, run as ``bastion.db.statements`` compiles
them, with bound parameters only. A statement has a time budget
(``QueryBudgetExceeded``, answered 503): a hostile filter on an unindexed
field cannot stall a worker. A change that a foreign key refuses (the row
it refers to is gone) raises ``MissingReference`` on either backend.

The two backends are ``bastion.db.sqlite.SqliteDatabase`` and
``bastion.db.postgres.PostgresDatabase``; ``bastion.db.open_database(url)`` picks one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar, runtime_checkable

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ClauseElement

T = TypeVar("T")
Params = Mapping[str, Any] | None
# The longest a statement may run (on SQLite, on the event loop's thread).
STATEMENT_BUDGET_SECONDS = 1.0


class DatabaseUnavailable(Exception):
    """The database cannot serve this statement now; the app answers 503 (NotReady)."""


class DatabaseGone(DatabaseUnavailable):
    """The SQLite file this process opened was deleted, replaced or made read-only."""


class QueryBudgetExceeded(DatabaseUnavailable):
    """A statement ran past its time budget and was stopped."""


class MissingReference(Exception):
    """A change was refused by a foreign key: the row it refers to is not there (any more).

    Only that refusal: a unique or check constraint's stays the driver's own
    error. The domain whose rows refer to another's turns it into its own
    answer (``bastion.data`` into ``OwnerGone``: the owner was erased meanwhile).
    """


class Queries(Protocol):
    """What a database and a transaction both answer."""

    @property
    def dialect(self) -> Dialect: ...

    async def one(self, statement: ClauseElement, params: Params = None) -> Any | None:
        """The first row (a named tuple), or None."""

    async def all(self, statement: ClauseElement, params: Params = None) -> list[Any]:
        """Every row."""

    async def value(self, statement: ClauseElement, params: Params = None) -> Any:
        """The first column of the first row, or None."""


@runtime_checkable
class Transaction(Queries, Protocol):
    def defer(self, statement: ClauseElement, row: Mapping[str, Any]) -> None:
        """Run ``statement`` with ``row`` when the transaction commits (rows of one statement in one go)."""

    async def execute(self, statement: ClauseElement, params: Params = None) -> int:
        """Run a change; the number of rows it matched."""

    async def execute_many(self, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run one change per row of parameters."""

    async def changed(self, statement: ClauseElement, params: Params = None) -> Any | None:
        """Run a change with RETURNING; the first row it returned, or None."""

    async def close(self, *, commit: bool) -> None:
        """Commit (``commit``) or roll back; a commit returns once it is durable."""


class Database(Queries, Protocol):
    @property
    def url(self) -> str: ...

    def begin(self) -> Transaction:
        """A new transaction; end it with ``close``. ``transaction()`` is the usual way."""

    async def run_sync(self, work: Callable[[Connection], T]) -> T:
        """``work`` on a SQLAlchemy connection, in a transaction of its own (schema changes)."""

    async def scrub(self, tables: Sequence[str]) -> bool:
        """Leave nothing readable of rows just deleted from ``tables`` where the engine
        allows (SQLite: truncate the log; PostgreSQL: VACUUM); whether it completed."""

    async def ping(self) -> bool:
        """Whether the database answers (and, for SQLite, is still the file it opened)."""

    async def close(self) -> None: ...


class Deferred:
    """What a transaction runs as it commits: rows by statement, each statement's rows in one go."""

    def __init__(self) -> None:
        self._rows: dict[int, tuple[ClauseElement, list[Mapping[str, Any]]]] = {}

    def add(self, statement: ClauseElement, row: Mapping[str, Any]) -> None:
        self._rows.setdefault(id(statement), (statement, []))[1].append(row)

    def take(self) -> list[tuple[ClauseElement, list[Mapping[str, Any]]]]:
        """Everything deferred so far, forgotten here."""
        taken, self._rows = list(self._rows.values()), {}
        return taken


@asynccontextmanager
async def transaction(db: Database) -> AsyncIterator[Transaction]:
    """Commit when the block ends, roll back if it raises."""
    tx = db.begin()
    try:
        yield tx
    except BaseException:
        await tx.close(commit=False)
        raise
    await tx.close(commit=True)
