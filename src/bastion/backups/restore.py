"""Restoring a backup into a data directory, in steps the command line strings together.

``bastion backup restore FILE --identity F --data-dir DIR``:

1. :func:`check_target`: DIR is missing or empty, unless ``--force``;
2. :func:`stage`: the sidecar (when it lies beside FILE) is checked first,
   then FILE is decrypted and unpacked into a staging directory *beside*
   DIR (same file system, so step 6 is a rename), every part's hash and the
   manifest's signature checked on the way (``archive.extract``);
3. PostgreSQL: :func:`stage_database` loads ``database.dump`` into a new
   database beside the one the restored settings name (refusing a target
   that holds tables, unless ``--force``);
4. ``verify.compare_tables``: row counts and content hashes of every
   table, recomputed on the restored database (``snapshot.database_digests``,
   the function ``create`` used), against the signed manifest — *before*
   any migration changes them;
5. the command line then migrates forward (``bastion.migrations`` sits
   above this package) and applies the erasure ledgers;
6. PostgreSQL: :func:`commit_database` renames the target aside and the
   staged database to the target's name;
7. :func:`commit`: the staging directory is renamed to DIR (a previous DIR,
   with ``--force``, is first renamed aside, never deleted).

A failure at any step removes the staging directory and the staged
database, and leaves DIR and the target database as they were.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from bastion.backups.archive import Progress, extract
from bastion.backups.errors import BackupUnavailable
from bastion.backups.manifest import Manifest
from bastion.backups.snapshot import admin_statement, load_dump
from bastion.security import token_bytes

__all__ = [
    "StagedDatabase",
    "check_target",
    "commit",
    "commit_database",
    "discard",
    "discard_database",
    "stage",
    "stage_database",
]

# Whatever the staging directory holds that is not a data directory's: the
# PostgreSQL dump, once loaded.
DUMP_PART = "database.dump"


def check_target(data_dir: Path, *, force: bool) -> None:
    """Refuse (BackupUnavailable) a data directory that holds anything, unless ``force``."""
    if data_dir.exists() and not data_dir.is_dir():
        raise BackupUnavailable(f"{data_dir} is not a directory")
    if not force and data_dir.is_dir() and any(data_dir.iterdir()):
        raise BackupUnavailable(f"{data_dir} is not empty: restore into a new directory, or add --force")
    if not data_dir.parent.is_dir():
        raise BackupUnavailable(f"{data_dir.parent} does not exist")


def stage(
    backup_path: Path,
    identity_text: str,
    data_dir: Path,
    vkeys: Iterable[str],
    *,
    progress: Progress | None = None,
) -> tuple[Path, Manifest]:
    """Unpack ``backup_path`` into a new staging directory beside ``data_dir``; it and the manifest.

    The sidecar, when present, is checked first and must describe the same
    backup as the manifest inside (``archive.extract`` does both: a sidecar
    swapped for another backup's is refused before anything is decrypted).
    """
    keys = list(vkeys)
    if not backup_path.is_file():
        raise BackupUnavailable(f"{backup_path}: no such file")
    staging = data_dir.parent / f".{data_dir.name}.restoring-{token_bytes(4).hex()}"
    staging.mkdir(mode=0o700)
    try:
        manifest = extract(backup_path, identity_text, staging, keys, progress)
    except BaseException:
        discard(staging)
        raise
    return staging, manifest


def discard(staging: Path) -> None:
    """Remove a staging directory (after a failure)."""
    shutil.rmtree(staging, ignore_errors=True)


def commit(staging: Path, data_dir: Path, *, now: dt.datetime) -> Path | None:
    """Rename ``staging`` to ``data_dir``; where a previous ``data_dir`` was moved (``--force``), if any.

    A rename within one directory is atomic: DIR is either the old one or the
    whole restored one. The previous content is kept beside it, for the
    operator to delete once the restored server runs.
    """
    (staging / DUMP_PART).unlink(missing_ok=True)
    replaced: Path | None = None
    if data_dir.exists():
        if any(data_dir.iterdir()):
            replaced = data_dir.with_name(f"{data_dir.name}.before-restore-{now:%Y%m%dT%H%M%SZ}")
            data_dir.rename(replaced)
        else:
            data_dir.rmdir()
    staging.rename(data_dir)
    fd = os.open(data_dir.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return replaced


# --- PostgreSQL ----------------------------------------------------------------
#
# The dump is loaded into a new database beside the target, checked and
# migrated there, and only then swapped in by two renames: the target's name
# holds the old database or the whole restored one, never a half-restored one.


@dataclass(frozen=True)
class StagedDatabase:
    """A restored database beside the target, waiting to take its name."""

    target_url: str
    url: str  # the staged database's
    held_tables: int  # in the target (0: nothing to keep aside)

    @property
    def target(self) -> str:
        return _name_of(self.target_url)

    @property
    def name(self) -> str:
        return _name_of(self.url)


def _name_of(url: str) -> str:
    return str(make_url(url).database)


def _url_of(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _beside(target: str, what: str) -> str:
    """A database name beside ``target``, within PostgreSQL's 63 bytes (it would cut a longer one)."""
    return f"{target.encode()[:30].decode(errors='ignore')}_{what}"


def _reason(exc: BaseException) -> object:
    return getattr(exc, "orig", None) or exc


async def _end_sessions(url: str, database: str) -> None:
    """End every other session on ``database`` (a server still using it), connected to ``url``."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            activity = sa.table("pg_stat_activity", sa.column("pid"), sa.column("datname"))
            await connection.execute(
                sa.select(sa.func.pg_terminate_backend(activity.c.pid)).where(
                    activity.c.datname == database, activity.c.pid != sa.func.pg_backend_pid()
                )
            )
    finally:
        await engine.dispose()


async def _public_tables(url: str) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.exec_driver_sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            found = result.scalar()
    except (OSError, DBAPIError) as exc:
        raise BackupUnavailable(f"the PostgreSQL database to restore into cannot be reached ({exc})") from None
    finally:
        await engine.dispose()
    return int(found or 0)


async def stage_database(dump: Path, url: str, *, force: bool) -> StagedDatabase:
    """Load ``dump`` (pg_dump -Fc) into a new database beside the one ``url`` names.

    A target that holds tables is refused unless ``force``. The new database
    is made from ``template0`` (nothing but the dump in it) on the same
    server, so the role restoring needs CREATEDB. The password reaches
    pg_restore in its environment, never on its command line
    (``snapshot.libpq_target``).
    """
    held = await _public_tables(url)
    if held and not force:
        raise BackupUnavailable(
            f"the PostgreSQL database holds {held} tables: restore into an empty one, or add --force"
        )
    staged = StagedDatabase(url, _url_of(url, _beside(_name_of(url), f"restoring_{token_bytes(4).hex()}")), held)
    try:
        await admin_statement(url, f"CREATE DATABASE {_quoted(staged.name)} TEMPLATE template0")
    except (OSError, DBAPIError) as exc:
        raise BackupUnavailable(
            f"cannot create the database to restore into beside {staged.target} "
            f"(the restoring role needs CREATEDB): {_reason(exc)}"
        ) from None
    try:
        # One transaction: a dump that fails half-way leaves nothing half-loaded.
        failure = await load_dump(dump, staged.url, single_transaction=True)
        if failure is not None:
            raise BackupUnavailable(f"pg_restore failed: {failure}")
    except BaseException:
        await discard_database(staged)
        raise
    return staged


async def discard_database(staged: StagedDatabase) -> None:
    """Drop the staged database (after a failure); the target was never touched."""
    with contextlib.suppress(OSError, DBAPIError):
        await admin_statement(staged.target_url, f"DROP DATABASE IF EXISTS {_quoted(staged.name)} WITH (FORCE)")


async def commit_database(staged: StagedDatabase, *, now: dt.datetime, force: bool) -> str | None:
    """Give the staged database the target's name; where the previous one went, if it was kept.

    The target is renamed aside (kept when it held tables, for the operator to
    drop once the restored server runs; dropped when it held none), then the
    staged database takes its name. ``force`` ends the sessions still open on
    the target (a server using it); without it they make the swap fail. A
    failure puts the target's name back and drops the staged database.
    """
    target, aside = staged.target, _beside(staged.target, f"before_restore_{now:%Y%m%dT%H%M%S}")
    try:
        if force:
            await _end_sessions(staged.url, target)
        await admin_statement(staged.url, f"ALTER DATABASE {_quoted(target)} RENAME TO {_quoted(aside)}")
    except (OSError, DBAPIError) as exc:
        await discard_database(staged)
        raise BackupUnavailable(f"cannot set the database {target} aside: {_reason(exc)}") from None
    try:
        on_aside = _url_of(staged.target_url, aside)
        await admin_statement(on_aside, f"ALTER DATABASE {_quoted(staged.name)} RENAME TO {_quoted(target)}")
    except (OSError, DBAPIError) as exc:
        with contextlib.suppress(OSError, DBAPIError):
            await admin_statement(staged.url, f"ALTER DATABASE {_quoted(aside)} RENAME TO {_quoted(target)}")
        await discard_database(staged)
        raise BackupUnavailable(f"cannot rename the restored database to {target}: {_reason(exc)}") from None
    if staged.held_tables:
        return aside
    with contextlib.suppress(OSError, DBAPIError):
        await admin_statement(staged.target_url, f"DROP DATABASE IF EXISTS {_quoted(aside)} WITH (FORCE)")
    return None
