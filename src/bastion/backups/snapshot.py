"""A consistent copy of the live database, taken while the server keeps writing, and its table digests.

**SQLite: ``VACUUM INTO`` from a connection of our own.** ``VACUUM INTO``
copies the database as one read transaction: it sees the last commit before
it started and nothing after, and in WAL mode a reader never blocks a
writer, so the server keeps committing while the copy is written (the WAL
grows meanwhile: a checkpoint cannot pass a reader's snapshot). The other
way, SQLite's online backup API, restarts from the first page whenever
another connection writes, so stepped from a separate process (``bastion
backup create``) it may never finish under load; run on the writer's own
connection it would not restart, but it would hold the writer, and every
request, for the whole copy. ``VACUUM INTO`` holds nothing but a read
snapshot and writes a compact file (no free pages: deleted rows' old bytes
are not carried into the backup).

**PostgreSQL: ``pg_dump -Fc`` on an exported snapshot.** A REPEATABLE READ,
READ ONLY transaction exports its snapshot (``pg_export_snapshot()``);
``pg_dump --snapshot`` dumps exactly that snapshot while the same
transaction computes the table digests, so the dump and the manifest
describe the same instant.

**Table digests** (:func:`table_digests`), what a restore is checked
against: per table, the row count and SHA-256 over its rows in primary-key
order (every column when there is none; text compared in byte order, COLLATE
"C" on PostgreSQL), each row encoded as Python's ``repr`` of the driver's
tuple of values plus a newline, after a line naming the columns; a binary
value is written ``blob(<length>, '<sha256 hex>')`` instead (its repr would
be four times its size). ``repr`` of ints, floats, strings, None, datetimes,
UUIDs and Decimals is unambiguous and stable, and computed in C. Rows are
read one by one (64 at a time on PostgreSQL) and hashed a megabyte at a time,
so memory stays bounded by the largest row. A digest compares a database with another of the
same kind (SQLite with SQLite, PostgreSQL with PostgreSQL), which is what a
restore does: drivers hand back different types for the same row.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import Connection, create_engine, inspect, make_url
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from bastion.backups.errors import BackupUnavailable
from bastion.backups.manifest import TableDigest
from bastion.security import StreamDigest

__all__ = [
    "Snapshot",
    "admin_statement",
    "database_digests",
    "database_kind",
    "libpq_target",
    "load_dump",
    "sqlite_path",
    "table_digests",
    "take_snapshot",
]

# PostgreSQL rows fetched at a time, and the encoded rows hashed at a time: a table
# of large blobs stays a few MB in memory, a table of small rows is hashed in big pieces.
_BATCH = 64
_FLUSH_CHARS = 1 << 20
# pg_dump gets this long to attach to the exported snapshot and dump; a stuck
# dump fails the backup rather than holding the snapshot (and VACUUM) forever.
PG_DUMP_TIMEOUT_SECONDS = 6 * 3600.0


@dataclass(frozen=True)
class Snapshot:
    """The database copy (``bastion.db`` or ``database.dump``), its schema revision and table digests."""

    database: Literal["sqlite", "postgresql"]
    path: Path
    schema_revision: str | None
    tables: Mapping[str, TableDigest]


def database_kind(url: str) -> Literal["sqlite", "postgresql"]:
    """ "sqlite" or "postgresql" for a SQLAlchemy URL; BackupUnavailable for anything else."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return "sqlite"
    if backend == "postgresql":
        return "postgresql"
    raise BackupUnavailable(f"backups support SQLite and PostgreSQL, not {backend}")


def sqlite_path(url: str) -> Path:
    """The database file of a SQLite URL."""
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupUnavailable("an in-memory SQLite database cannot be backed up")
    return Path(database)


# --- digests -----------------------------------------------------------------------


def _quote(connection: Connection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote(name)


def _order_by(connection: Connection, table: str) -> str:
    inspector = inspect(connection)
    columns = inspector.get_columns(table)
    keyed = inspector.get_pk_constraint(table).get("constrained_columns") or [c["name"] for c in columns]
    textual = {c["name"] for c in columns if _is_text(c["type"])} if _is_postgres(connection) else set()
    return ", ".join(_quote(connection, name) + (' COLLATE "C"' if name in textual else "") for name in keyed)


def _is_text(kind: object) -> bool:
    try:
        return getattr(kind, "python_type", None) is str
    except NotImplementedError:  # a type SQLAlchemy cannot map (NullType)
        return False


def _is_postgres(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def _table_digest(connection: Connection, table: str) -> TableDigest:
    columns = [c["name"] for c in inspect(connection).get_columns(table)]
    hashed = StreamDigest()
    hashed.update(repr(tuple(columns)).encode() + b"\n")
    rows = 0
    statement = f"SELECT * FROM {_quote(connection, table)} ORDER BY {_order_by(connection, table)}"  # noqa: S608 (names from the schema, quoted)
    pending: list[str] = []
    size = 0
    for row in _rows(connection, statement):
        rows += 1
        line = f"{_row(row)!r}\n"
        pending.append(line)
        size += len(line)
        if size > _FLUSH_CHARS:
            hashed.update("".join(pending).encode("utf-8", "backslashreplace"))
            pending, size = [], 0
    hashed.update("".join(pending).encode("utf-8", "backslashreplace"))
    return TableDigest(rows, hashed.hexdigest())


def _rows(connection: Connection, statement: str) -> Iterator[Sequence[object]]:
    """The statement's rows one by one, never all at once.

    On SQLite, straight from the ``sqlite3`` cursor, which steps the
    statement as it is iterated (SQLAlchemy's pysqlite result would buffer
    batches); on PostgreSQL, a server-side cursor fetching ``_BATCH`` rows
    at a time.
    """
    if connection.dialect.name == "sqlite":
        raw = connection.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)  # noqa: S101 (the pysqlite dialect's connection)
        cursor = raw.execute(statement)
        try:
            yield from cursor
        finally:
            cursor.close()
        return
    result = connection.execution_options(stream_results=True, yield_per=_BATCH).exec_driver_sql(statement)
    for batch in result.partitions(_BATCH):
        yield from batch


class _Blob:
    """A binary value in a row's encoding: its length and SHA-256, not a repr four times its size."""

    __slots__ = ("text",)

    def __init__(self, value: bytes | bytearray | memoryview) -> None:
        hashed = StreamDigest()
        hashed.update(bytes(value))
        self.text = f"blob({hashed.size}, {hashed.hexdigest()!r})"

    def __repr__(self) -> str:
        return self.text


_BINARY = frozenset({bytes, bytearray, memoryview})


def _row(row: Sequence[object]) -> tuple[object, ...]:
    values = tuple(row)
    if _BINARY.isdisjoint(map(type, values)):  # the common case, checked in C
        return values
    return tuple(_Blob(v) if isinstance(v, (bytes, bytearray, memoryview)) else v for v in values)


def table_digests(connection: Connection) -> dict[str, TableDigest]:
    """Row count and content SHA-256 of every table of the connection's database (its default schema).

    Run it in one transaction (a snapshot) for a result that means anything
    while others write; on an asyncio connection, through ``run_sync``.
    """
    names = sorted(inspect(connection).get_table_names())
    return {name: _table_digest(connection, name) for name in names}


def _revision(connection: Connection) -> str | None:
    if "alembic_version" not in inspect(connection).get_table_names():
        return None
    value = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    return None if value is None else str(value)


def _sqlite_digests(path: Path) -> tuple[str | None, dict[str, TableDigest]]:
    engine = create_engine(URL.create("sqlite", database=str(path)))
    try:
        with engine.connect() as connection:
            return _revision(connection), table_digests(connection)
    finally:
        engine.dispose()


async def database_digests(url: str) -> dict[str, TableDigest]:
    """The table digests of the database at ``url`` (a restored instance's), one snapshot."""
    if database_kind(url) == "sqlite":
        return await asyncio.to_thread(lambda: _sqlite_digests(sqlite_path(url))[1])
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="REPEATABLE READ")
            async with connection.begin():
                return await connection.run_sync(table_digests)
    finally:
        await engine.dispose()


# --- snapshots -----------------------------------------------------------------------


def _vacuum_into(source: Path, target: Path) -> None:
    if not source.exists():
        raise BackupUnavailable(f"{source}: no database (run `bastion init`?)")
    # A connection of our own, read only in effect: VACUUM INTO only reads the source.
    connection = sqlite3.connect(source, isolation_level=None)
    try:
        connection.execute("PRAGMA busy_timeout=30000")
        connection.execute("VACUUM INTO ?", (str(target),))
    except sqlite3.Error as exc:
        raise BackupUnavailable(f"{source}: cannot be copied ({exc})") from None
    finally:
        connection.close()
    # The copy's own journal files are none of the backup's business.
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _sqlite_snapshot(url: str, into: Path) -> Snapshot:
    target = into / "bastion.db"

    def work() -> Snapshot:
        _vacuum_into(sqlite_path(url), target)
        os.chmod(target, 0o600)
        revision, tables = _sqlite_digests(target)
        return Snapshot("sqlite", target, revision, tables)

    return await asyncio.to_thread(work)


# URL query parameters libpq reads, and the environment variable each becomes: a socket
# directory (``?host=/run/postgresql``), the TLS files, timeouts reach pg_dump as the server
# connection has them. Any other parameter is the driver's own (asyncpg's) and means nothing to libpq.
_LIBPQ_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "requirepeer": "PGREQUIREPEER",
    "channel_binding": "PGCHANNELBINDING",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "passfile": "PGPASSFILE",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
}


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """``pg_dump --dbname`` text for a SQLAlchemy URL, and the environment holding the password
    (never on the command line, where every local user could read it) and the URL's libpq query
    parameters as ``PG*`` variables (``host`` only when the URL names no host itself)."""
    parsed = make_url(url)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    for key, given in parsed.query.items():
        value = given[-1] if isinstance(given, tuple) else given
        if key in _LIBPQ_ENV and isinstance(value, str):
            env[_LIBPQ_ENV[key]] = value
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    ssl = parsed.query.get("ssl")
    if isinstance(ssl, str) and "sslmode" not in parsed.query:
        # asyncpg's spelling of sslmode
        env["PGSSLMODE"] = {"true": "require", "false": "disable"}.get(ssl, ssl)
    plain = URL.create(
        "postgresql", username=parsed.username, host=parsed.host, port=parsed.port, database=parsed.database
    )
    return plain.render_as_string(hide_password=False), env


async def admin_statement(url: str, statement: str) -> None:
    """One statement outside a transaction (CREATE, ALTER or DROP DATABASE), connected to ``url``."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(statement)
    finally:
        await engine.dispose()


async def load_dump(dump: Path, url: str, *, single_transaction: bool = False) -> str | None:
    """Load a ``pg_dump -Fc`` file into the database ``url`` names; the failure's last line, or None.

    BackupUnavailable when pg_restore is not installed. The password and libpq
    parameters travel in the environment (``libpq_target``).
    """
    program = shutil.which("pg_restore")
    if program is None:
        raise BackupUnavailable("pg_restore is not installed (Debian: apt-get install postgresql-client)")
    dbname, env = libpq_target(url)
    options = ["--no-owner", "--no-privileges", "--exit-on-error", "--no-password"]
    if single_transaction:
        options.append("--single-transaction")
    process = await asyncio.create_subprocess_exec(
        program,
        *options,
        f"--dbname={dbname}",
        str(dump),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    if process.returncode == 0:
        return None
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"exit status {process.returncode}"


async def _pg_dump(url: str, snapshot_id: str, target: Path) -> None:
    program = shutil.which("pg_dump")
    if program is None:
        raise BackupUnavailable("pg_dump is not installed (Debian: apt-get install postgresql-client)")
    dbname, env = libpq_target(url)
    process = await asyncio.create_subprocess_exec(
        program,
        "--format=custom",
        "--no-password",
        f"--snapshot={snapshot_id}",
        f"--file={target}",
        f"--dbname={dbname}",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), PG_DUMP_TIMEOUT_SECONDS)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        reason = stderr.decode(errors="replace").strip().splitlines()
        raise BackupUnavailable(f"pg_dump failed: {reason[-1] if reason else process.returncode}")


async def _postgres_snapshot(url: str, into: Path) -> Snapshot:
    target = into / "database.dump"
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="REPEATABLE READ")
            async with connection.begin():
                await connection.exec_driver_sql("SET TRANSACTION READ ONLY")
                snapshot_id = str((await connection.exec_driver_sql("SELECT pg_export_snapshot()")).scalar_one())
                dump = asyncio.create_task(_pg_dump(url, snapshot_id, target))
                try:
                    revision = await connection.run_sync(_revision)
                    tables = await connection.run_sync(table_digests)
                finally:
                    # The snapshot must outlive pg_dump's attaching to it: wait for the dump
                    # before this transaction ends.
                    await asyncio.wait([dump])
                dump.result()
    except BackupUnavailable:
        raise
    except OSError as exc:
        raise BackupUnavailable(f"the database cannot be reached ({exc})") from None
    finally:
        await engine.dispose()
    os.chmod(target, 0o600)
    return Snapshot("postgresql", target, revision, tables)


async def take_snapshot(url: str, into: Path) -> Snapshot:
    """Copy the database at ``url`` into the directory ``into`` while it stays in use."""
    if database_kind(url) == "sqlite":
        return await _sqlite_snapshot(url, into)
    return await _postgres_snapshot(url, into)
