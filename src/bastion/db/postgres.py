"""PostgreSQL on asyncpg: pooled connections, prepared statements, a budget per statement.

Each statement is compiled once (``bastion.db.statements``) and asyncpg
prepares it once per connection and keeps it (its statement cache), so a hot
statement is parsed and planned once per connection, not per request. A
transaction takes a connection from the pool at its first statement and gives
it back when it ends; reads outside a transaction borrow one per statement.
``statement_timeout`` is the budget of every statement.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import Connection, make_url
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import ClauseElement

from bastion.db.database import (
    STATEMENT_BUDGET_SECONDS,
    DatabaseUnavailable,
    Deferred,
    MissingReference,
    Params,
    QueryBudgetExceeded,
)
from bastion.db.statements import Compiled, Statements, json_text

T = TypeVar("T")
POOL_SIZE = 10
# Failures that mean the server is away, not that the statement was wrong.
_AWAY = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError)


async def _json_codecs(connection: asyncpg.Connection) -> None:
    """JSON columns in as the text SQLAlchemy's JSON type serialised, out parsed
    (by the standard library: orjson reads integers past 64 bits as floats)."""
    for name in ("json", "jsonb"):
        await connection.set_type_codec(name, encoder=str, decoder=json.loads, schema="pg_catalog")


@contextmanager
def _statement() -> Iterator[None]:
    """One statement's driver errors as the database's: past its budget, server away, foreign key refused."""
    try:
        yield
    except asyncpg.QueryCanceledError:
        raise QueryBudgetExceeded from None
    except asyncpg.ForeignKeyViolationError:
        raise MissingReference from None
    except _AWAY as exc:
        raise DatabaseUnavailable from exc


def _flat(bound: tuple[str, list[Any]]) -> list[Any]:
    sql, arguments = bound
    return [sql, *arguments]


class PostgresDatabase:
    def __init__(self, url: str, *, budget: float = STATEMENT_BUDGET_SECONDS) -> None:
        self.url = url
        self.dialect = PGDialect_asyncpg(json_serializer=json_text)  # type: ignore[no-untyped-call]
        self.statements = Statements(self.dialect)
        self.budget = budget
        self._dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._schema_engine: AsyncEngine | None = None

    async def pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._opening:  # the first caller opens it; the rest wait for that one
            if self._pool is not None:
                return self._pool
            try:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=POOL_SIZE,
                    server_settings={"statement_timeout": str(int(self.budget * 1000))},
                    init=_json_codecs,
                )
            except _AWAY as exc:
                raise DatabaseUnavailable from exc
        return self._pool

    async def run(
        self, connection: asyncpg.Connection | None, statement: ClauseElement, params: Params
    ) -> tuple[Compiled, list[Any]]:
        compiled = self.statements.compiled(statement, params)
        sql, arguments = compiled.bind(params)
        with _statement():
            if connection is not None:
                return compiled, await connection.fetch(sql, *arguments)
            pool = await self.pool()
            return compiled, await pool.fetch(sql, *arguments)

    async def one(self, statement: ClauseElement, params: Params = None) -> Any | None:
        compiled, rows = await self.run(None, statement, params)
        return compiled.row(rows[0]) if rows else None

    async def all(self, statement: ClauseElement, params: Params = None) -> list[Any]:
        compiled, rows = await self.run(None, statement, params)
        return compiled.rows(rows)

    async def value(self, statement: ClauseElement, params: Params = None) -> Any:
        compiled, rows = await self.run(None, statement, params)
        return compiled.row(rows[0])[0] if rows else None

    def begin(self) -> PostgresTransaction:
        return PostgresTransaction(self)

    async def run_sync(self, work: Callable[[Connection], T]) -> T:
        if self._schema_engine is None:
            self._schema_engine = create_async_engine(self.url, pool_size=1, max_overflow=1)
        async with self._schema_engine.begin() as connection:
            return await connection.run_sync(work)

    async def scrub(self, tables: Sequence[str]) -> bool:
        """After deletes that must leave nothing readable (an erasure): VACUUM ``tables``,
        so their dead row versions are removed and the space reused, rather than kept
        until autovacuum comes by. Plain VACUUM takes no lock that blocks reads or
        writes; it does not promise the freed bytes are overwritten at once, nor
        reach the WAL segments, replicas or base backups (docs/privacy.md)."""
        names = ", ".join(_quoted(name) for name in tables)
        if not names:
            return True
        pool = await self.pool()
        try:
            async with pool.acquire() as connection:
                # VACUUM cannot run in a transaction, so no SET LOCAL: the pool's
                # statement budget is lifted for this one statement and put back.
                await connection.execute(f"SET statement_timeout = {int(SCRUB_SECONDS * 1000)}")
                try:
                    await connection.execute(f"VACUUM {names}")
                finally:
                    await connection.execute(f"SET statement_timeout = {int(self.budget * 1000)}")
        except _AWAY as exc:
            raise DatabaseUnavailable from exc
        return True

    async def ping(self) -> bool:
        try:
            answer: object = await (await self.pool()).fetchval("SELECT 1")
        except (DatabaseUnavailable, *_AWAY, asyncpg.PostgresError):
            return False
        return answer == 1

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._schema_engine is not None:
            await self._schema_engine.dispose()
            self._schema_engine = None


class PostgresTransaction:
    """One pooled connection in one transaction (READ COMMITTED), taken at the first statement."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db
        self.dialect = db.dialect
        self._connection: asyncpg.Connection | None = None
        self._transaction: Any = None
        self._deferred = Deferred()

    async def _open(self) -> asyncpg.Connection:
        if self._connection is None:
            pool = await self.db.pool()
            try:
                connection = await pool.acquire()
            except _AWAY as exc:
                raise DatabaseUnavailable from exc
            try:
                self._transaction = connection.transaction()
                await self._transaction.start()
            except BaseException:
                await pool.release(connection)
                raise
            self._connection = connection
        return self._connection

    async def one(self, statement: ClauseElement, params: Params = None) -> Any | None:
        compiled, rows = await self.db.run(await self._open(), statement, params)
        return compiled.row(rows[0]) if rows else None

    async def all(self, statement: ClauseElement, params: Params = None) -> list[Any]:
        compiled, rows = await self.db.run(await self._open(), statement, params)
        return compiled.rows(rows)

    async def value(self, statement: ClauseElement, params: Params = None) -> Any:
        compiled, rows = await self.db.run(await self._open(), statement, params)
        return compiled.row(rows[0])[0] if rows else None

    async def changed(self, statement: ClauseElement, params: Params = None) -> Any | None:
        return await self.one(statement, params)

    async def execute(self, statement: ClauseElement, params: Params = None) -> int:
        connection = await self._open()
        compiled = self.db.statements.compiled(statement, params)
        with _statement():
            status = await connection.execute(*_flat(compiled.bind(params)))
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def execute_many(self, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        connection = await self._open()
        compiled = self.db.statements.compiled(statement, rows[0])
        with _statement():
            bound = [compiled.bind(row) for row in rows]
            await connection.executemany(bound[0][0], [arguments for _, arguments in bound])

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
            connection, self._connection = self._connection, None
            if connection is not None:
                try:
                    if commit:
                        await self._transaction.commit()
                    else:
                        await self._transaction.rollback()
                except _AWAY as exc:
                    raise DatabaseUnavailable from exc
                finally:
                    await (await self.db.pool()).release(connection)


# How long the VACUUM after an erasure may run (the tables it names are scanned once).
SCRUB_SECONDS = 60.0


def _quoted(name: str) -> str:
    """A table name as a quoted identifier (the names are Bastion's own: ``users``, ``c_<collection>``)."""
    return '"' + name.replace('"', '""') + '"'
