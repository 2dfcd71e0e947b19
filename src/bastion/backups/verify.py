"""``backup verify``: a backup checked without its identity (signature and hash of the file), or
with it, everything inside (every part's hash, the database opened and each table's digest).

With the identity, the database is opened, never trusted by its hash alone:
SQLite's ``PRAGMA integrity_check`` on the extracted file, or for
PostgreSQL a ``pg_restore`` into a scratch database (created on the server
``scratch_url`` names, dropped after). Then every table's row count and
content digest must equal the signed manifest's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from sqlalchemy import make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from bastion.backups.archive import Progress, extract
from bastion.backups.errors import BackupInvalid, BackupUnavailable
from bastion.backups.manifest import Manifest, TableDigest, verify_sidecar
from bastion.backups.snapshot import admin_statement, database_digests, load_dump
from bastion.security import token_bytes
from bastion.security.age import AgeError, recipient_of

__all__ = ["compare_tables", "verify_backup"]


def compare_tables(expected: Mapping[str, TableDigest], actual: Mapping[str, TableDigest]) -> None:
    """BackupInvalid naming the first table whose rows or digest differ from the manifest's."""
    for name in sorted(set(expected) | set(actual)):
        want, got = expected.get(name), actual.get(name)
        if want is None:
            raise BackupInvalid(f"table {name}: restored but not in the manifest")
        if got is None:
            raise BackupInvalid(f"table {name}: in the manifest but not restored")
        if want.rows != got.rows:
            raise BackupInvalid(f"table {name}: {got.rows} rows, the manifest says {want.rows}")
        if want.sha256 != got.sha256:
            raise BackupInvalid(f"table {name}: its content differs from the manifest's digest")


def _integrity_check(path: Path) -> None:
    connection = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    try:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        raise BackupInvalid(f"bastion.db does not open as a SQLite database ({exc})") from None
    finally:
        connection.close()
    if [tuple(row) for row in rows] != [("ok",)]:
        raise BackupInvalid(f"bastion.db fails PRAGMA integrity_check: {rows[0][0]}")


async def _pg_restore_digests(dump: Path, scratch_url: str) -> dict[str, TableDigest]:
    name = f"bastion_verify_{token_bytes(6).hex()}"
    scratch = make_url(scratch_url).set(database=name)
    url = scratch.render_as_string(hide_password=False)
    try:
        await admin_statement(scratch_url, f'CREATE DATABASE "{name}"')
    except (OSError, SQLAlchemyError) as exc:
        reason = getattr(exc, "orig", None) or exc
        raise BackupUnavailable(f"no scratch database on the PostgreSQL server ({reason})") from None
    try:
        failure = await load_dump(dump, url)
        if failure is not None:
            raise BackupInvalid(f"database.dump does not restore: {failure}")
        return await database_digests(url)
    finally:
        with contextlib.suppress(Exception):
            await admin_statement(scratch_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


VERIFY_PREFIX = ".verify-"
STALE_SECONDS = 3600  # older than any verify: left by a crash


def _private_work_dir(work_dir: Path | None) -> Path:
    """A new 0700 directory (mkdtemp's mode) under ``work_dir`` or $TMPDIR, after removing the
    ``.verify-*`` directories a crashed verify left there."""
    parent = work_dir if work_dir is not None else Path(tempfile.gettempdir())
    now = time.time()
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(parent):
            if (
                entry.name.startswith(VERIFY_PREFIX)
                and entry.is_dir(follow_symlinks=False)
                and now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
            ):
                shutil.rmtree(entry.path, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=parent, prefix=VERIFY_PREFIX))


async def verify_backup(
    backup_path: Path,
    keys: Iterable[str],
    *,
    identity_text: str | None = None,
    scratch_url: str | None = None,
    progress: Progress | None = None,
    work_dir: Path | None = None,
) -> Manifest:
    """The backup's manifest once every check passes; BackupInvalid (bad backup) or
    BackupUnavailable (cannot check: no identity match, no scratch server).

    With the identity, the plaintext database is extracted into a private (0700) ``.verify-*``
    directory under ``work_dir`` (the data dir, say), or ``$TMPDIR``: never beside the backup,
    which may be an off-site mount. Such directories left by a crash are removed once stale."""
    vkeys = list(keys)
    try:
        encrypted = await asyncio.to_thread(backup_path.open, "rb")
    except FileNotFoundError:
        raise BackupInvalid(f"{backup_path.name}: the backup file is missing") from None
    with encrypted:
        return await _verify_opened(
            backup_path,
            encrypted,
            vkeys,
            identity_text=identity_text,
            scratch_url=scratch_url,
            progress=progress,
            work_dir=work_dir,
        )


async def _verify_opened(
    backup_path: Path,
    encrypted: BinaryIO,
    vkeys: list[str],
    *,
    identity_text: str | None,
    scratch_url: str | None,
    progress: Progress | None,
    work_dir: Path | None,
) -> Manifest:
    # One open file, hashed then decrypted: a file renamed over the backup meanwhile is never read.
    manifest = await asyncio.to_thread(lambda: verify_sidecar(backup_path, vkeys, progress, opened=encrypted))
    if identity_text is None:
        return manifest
    try:
        recipient = recipient_of(identity_text)
    except AgeError as exc:
        raise BackupUnavailable(f"the identity file: {exc}") from None
    if recipient not in manifest.recipients:
        raise BackupUnavailable(f"this identity ({recipient[:16]}…) is not one of the backup's recipients")
    if manifest.database == "postgresql" and scratch_url is None:
        raise BackupUnavailable("checking a PostgreSQL backup needs a server to restore it on (--scratch-url)")
    tmp = await asyncio.to_thread(_private_work_dir, work_dir)
    try:
        # The sidecar was checked above, with this progress bar: not twice.
        inside = await asyncio.to_thread(
            lambda: extract(backup_path, identity_text, tmp, vkeys, progress, check_sidecar=False, opened=encrypted)
        )
        if inside != manifest:
            raise BackupInvalid(f"{backup_path.name}: the manifest inside differs from its sidecar")
        database = tmp / inside.database_part
        if inside.database == "sqlite":
            await asyncio.to_thread(_integrity_check, database)
            url = URL.create("sqlite+aiosqlite", database=str(database)).render_as_string()
            actual = await database_digests(url)
        else:
            assert scratch_url is not None  # noqa: S101 (checked above)
            actual = await _pg_restore_digests(database, scratch_url)
        compare_tables(inside.tables, actual)
    finally:
        # Off the event loop: a drill inside serve must not stall it removing a large database.
        await asyncio.to_thread(shutil.rmtree, tmp, ignore_errors=True)
    return manifest
