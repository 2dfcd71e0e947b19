"""Restoring a backup into a data directory, in steps the command line strings together.

``bastion backup restore FILE --identity F --data-dir DIR``:

1. :func:`check_target`: DIR is missing or empty, unless ``--force``;
2. :func:`stage`: the sidecar (when it lies beside FILE) is checked first,
   then FILE is decrypted and unpacked into a staging directory *beside*
   DIR (same file system, so step 6 is a rename), every part's hash and the
   manifest's signature checked on the way (``archive.extract``);
3. PostgreSQL: :func:`pg_restore` loads ``database.dump`` into the database
   the restored settings name (refusing one that holds tables, unless
   ``--force``);
4. ``verify.compare_tables``: row counts and content hashes of every
   table, recomputed on the restored database (``snapshot.database_digests``,
   the function ``create`` used), against the signed manifest — *before*
   any migration changes them;
5. the command line then migrates forward (``bastion.migrations`` sits
   above this package) and applies the erasure ledgers;
6. :func:`commit`: the staging directory is renamed to DIR (a previous DIR,
   with ``--force``, is first renamed aside, never deleted).

A failure at any step removes the staging directory and leaves DIR as it
was (for PostgreSQL: the database, once loaded, is not rolled back).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from bastion.backups.archive import Progress, extract
from bastion.backups.errors import BackupUnavailable
from bastion.backups.manifest import Manifest
from bastion.backups.snapshot import load_dump
from bastion.security import token_bytes

__all__ = ["check_target", "commit", "discard", "pg_restore", "stage"]

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


async def _empty_public_schema(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql("DROP SCHEMA public CASCADE")
            await connection.exec_driver_sql("CREATE SCHEMA public")
    finally:
        await engine.dispose()


async def pg_restore(dump: Path, url: str, *, force: bool) -> None:
    """Load ``dump`` (pg_dump -Fc) into the database of ``url``.

    A database that holds tables is refused unless ``force``; with it the
    ``public`` schema is dropped and created again first, so nothing of the
    previous content (a table a newer migration made) survives beside the
    restored one. The password reaches pg_restore in its environment, never
    on its command line (``snapshot.libpq_target``).
    """
    tables = await _public_tables(url)
    if tables:
        if not force:
            raise BackupUnavailable(
                f"the PostgreSQL database holds {tables} tables: restore into an empty one, or add --force"
            )
        await _empty_public_schema(url)
    # One transaction: a dump that fails half-way leaves the database as empty as it was.
    failure = await load_dump(dump, url, single_transaction=True)
    if failure is not None:
        raise BackupUnavailable(f"pg_restore failed: {failure}")
