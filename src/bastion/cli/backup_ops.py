"""``bastion backup restore | drill | prune``, registered into ``bastion backup`` (cli/backup.py).

The same exit codes as the rest of ``bastion backup``: 0 done, 1 a backup is
bad, 2 the command cannot run; one line saying why.

``restore`` is here, in the command line, and not in ``bastion.backups``
because it migrates the restored schema forward: the migrations sit above
the backups package (they know every domain's tables).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bastion.cli.backup import IdentityFile, KeyFile, backup_errors, progress_bar, trusted_keys
from bastion.cli.common import CommandError, DataDir, err, out, settings_for

if TYPE_CHECKING:
    from bastion.backups.manifest import Manifest
    from bastion.backups.restore import StagedDatabase
    from bastion.settings import Settings

__all__ = ["register"]


def register(backup: typer.Typer) -> None:
    """Add restore, drill and prune to ``bastion backup``."""
    backup.command("restore")(restore)
    backup.command("drill")(drill)
    backup.command("prune")(prune)


def _read_identity(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot be read ({exc})") from None


def _restore_vkeys(target: Path, key_file: Path | None) -> list[str]:
    """The notary keys a restore trusts: the --key file's, or the keystore of the data dir being replaced.

    Never the keys inside the backup: a signature checked with a key found
    inside the thing it signs proves nothing.
    """
    if key_file is not None:
        return trusted_keys(None, key_file)[0]
    if (target / "keys").is_dir():
        return trusted_keys(target, None)[0]
    raise CommandError(
        "give --key FILE (the output of `bastion keys export-public`) to check the backup's signatures with"
    )


async def _finish(
    staging: Path, target: Path, manifest: Manifest, backup_file: Path, vkeys: list[str], *, force: bool
) -> tuple[dict[str, Any], StagedDatabase | None]:
    """Steps 3 to 5 of bastion.backups.restore on the staged directory; what was done, and the
    staged PostgreSQL database (dropped here if a step fails)."""
    from bastion.backups.errors import BackupUnavailable
    from bastion.backups.restore import discard_database, stage_database
    from bastion.backups.snapshot import database_kind
    from bastion.settings import Secret, load_settings

    _refuse_newer(manifest)
    restored = load_settings(staging)
    url = restored.sqlalchemy_url
    if database_kind(url) != manifest.database:
        raise BackupUnavailable(
            f"a {manifest.database} backup, but the restored settings name a {database_kind(url)} database "
            "(check BASTION_DATABASE_URL)"
        )
    paths: dict[str, Any] = {"staging": staging, "target": target, "backup_file": backup_file, "vkeys": vkeys}
    if manifest.database != "postgresql":
        return await _check_and_apply(restored, manifest, **paths), None
    staged = await stage_database(staging / "database.dump", url, force=force)
    try:
        # Every step until the swap works on the staged database, under its own name.
        on_staged = restored.model_copy(update={"database_url": Secret(staged.url)})
        return await _check_and_apply(on_staged, manifest, **paths), staged
    except BaseException:
        await discard_database(staged)
        raise


def _refuse_newer(manifest: Manifest) -> None:
    from bastion.backups.errors import BackupUnavailable
    from bastion.migrations import head_revision, known_revisions

    revision = manifest.schema_revision
    if revision is not None and revision not in known_revisions():
        raise BackupUnavailable(
            f"the backup's schema revision {revision} is newer than this Bastion's ({head_revision()}): "
            f"restore it with Bastion {manifest.bastion_version} or later"
        )


async def _check_and_apply(
    restored: Settings, manifest: Manifest, *, staging: Path, target: Path, backup_file: Path, vkeys: list[str]
) -> dict[str, Any]:
    """Steps 4 and 5: the tables against the manifest, migrations, the erasure ledgers, the event."""
    from bastion.backups.destinations import destinations_of
    from bastion.backups.ledger_apply import apply_erasure_ledgers, gather_ledgers
    from bastion.backups.ledger_sync import LEDGER_NAME
    from bastion.backups.snapshot import database_digests
    from bastion.backups.verify import compare_tables
    from bastion.migrations import head_revision, upgrade

    url = restored.sqlalchemy_url
    revision = manifest.schema_revision
    # Before any migration: the tables must be exactly what the manifest signed.
    compare_tables(manifest.tables, await database_digests(url))
    if revision != head_revision():
        await asyncio.to_thread(upgrade, url)
    # The ledgers: beside the backup, inside it, in the data dir being replaced, and in every
    # destination the restored settings name (their [backups] dir resolved against the target).
    as_target = restored.model_copy(update={"data_dir": target})
    texts = await asyncio.to_thread(
        gather_ledgers,
        [backup_file.parent / LEDGER_NAME, staging / LEDGER_NAME, target / LEDGER_NAME],
        destinations_of(as_target),
    )
    erased = await apply_erasure_ledgers(restored, texts, vkeys)
    details = {
        "id": manifest.id,
        "name": manifest.name,
        "schema_revision": revision,
        "migrated_to": head_revision(),
        "erased": erased,
        "from": str(backup_file),
    }
    await _record_restore(restored, details)
    return details


async def _record_restore(restored: Settings, details: dict[str, Any]) -> None:
    """The restored instance's own audit log says where it came from."""
    from bastion.audit import EventTag, Origin, record_event
    from bastion.clock import SystemClock
    from bastion.db import open_database, transaction

    db = open_database(restored.sqlalchemy_url)
    try:
        async with transaction(db) as tx:
            record_event(tx, SystemClock(), EventTag.BACKUP_RESTORE, origin=Origin.cli(), details=details)
    finally:
        await db.close()


def restore(
    file: Annotated[Path, typer.Argument(help="The backup file (.tar.zst.age); its .manifest lies beside it.")],
    identity: Annotated[Path, typer.Option("--identity", help="The age identity file (from `backup keygen`).")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Restore into this data directory (missing or empty).")],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Restore over a non-empty directory or a PostgreSQL database that holds tables (each "
            "kept aside, not deleted), ending the sessions still open on that database.",
        ),
    ] = False,
    key: KeyFile = None,
) -> None:
    """Restore a backup into a data directory: checked (signatures, every part, every table's rows and
    hash), migrated forward when older, erased users removed again, then renamed into place at once.

    The master key is not in the backup: the restored server needs the original's
    (BASTION_MASTER_KEY_FILE), as does applying the erasure ledger.
    """
    from bastion.backups.restore import check_target, commit, commit_database, discard, stage

    with backup_errors():
        target = data_dir.expanduser().absolute()
        check_target(target, force=force)
        vkeys = _restore_vkeys(target, key)
        identity_text = _read_identity(identity)
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        with progress_bar() as progress:
            task = progress.add_task("decrypting", total=file.stat().st_size)
            staging, manifest = stage(file, identity_text, target, vkeys, progress=lambda n: progress.advance(task, n))
        now = dt.datetime.now(dt.UTC)
        try:
            details, database = asyncio.run(_finish(staging, target, manifest, file, vkeys, force=force))
            set_aside = asyncio.run(commit_database(database, now=now, force=force)) if database else None
            replaced = commit(staging, target, now=now)
        except BaseException:
            discard(staging)
            raise
    if set_aside is not None:
        err.print(f"the previous PostgreSQL database is now {set_aside}", highlight=False, markup=False)
    if replaced is not None:
        err.print(f"the previous content of {target} is now in {replaced}", highlight=False)
    migrated = (
        ""
        if details["schema_revision"] == details["migrated_to"]
        else (f", schema {details['schema_revision']} → {details['migrated_to']}")
    )
    out.print(
        f"restored {manifest.id} into {target} (every table checked{migrated}; "
        f"{details['erased']} erased user(s) removed again)",
        highlight=False,
        markup=False,
    )


def drill(
    identity: IdentityFile = None,
    key: KeyFile = None,
    data_dir: DataDir = None,
) -> None:
    """Restore the newest backup somewhere disposable and check it (every part, the database, every
    table); without --identity only its signatures and file hash. Recorded as a backup:drill event."""
    from bastion.backups.destinations import destinations_of
    from bastion.backups.drill import drill as run_drill
    from bastion.backups.snapshot import database_kind
    from bastion.clock import SystemClock
    from bastion.db import open_database

    with backup_errors():
        vkeys, loaded = trusted_keys(data_dir, key)
        settings = loaded if loaded is not None else settings_for(data_dir)
        identity_text = _read_identity(identity) if identity is not None else None
        url = settings.sqlalchemy_url

        async def go() -> Any:
            db = open_database(url)
            try:
                return await run_drill(
                    clock=SystemClock(),
                    db=db,
                    destinations=destinations_of(settings),
                    vkeys=vkeys,
                    identity_text=identity_text,
                    postgres_url=url if database_kind(url) == "postgresql" else None,
                )
            finally:
                await db.close()

        result = asyncio.run(go())
    checked = (
        "restored and every table checked"
        if result.full
        else "signatures and file hash only: give --identity for a full drill"
    )
    out.print(f"good: {result.id} in {result.seconds:.1f} s ({checked})", highlight=False, markup=False)


def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be deleted; delete nothing.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Delete the backups that keep_last, keep_daily, keep_weekly and keep_monthly (section backups) no longer keep,
    in every destination, and leftovers of killed runs older than an hour."""
    from bastion.backups.destinations import destinations_of
    from bastion.backups.prune import prune as run_prune
    from bastion.clock import SystemClock
    from bastion.db import open_database

    settings = settings_for(data_dir)
    with backup_errors():

        async def go() -> Any:
            db = open_database(settings.sqlalchemy_url)
            try:
                return await run_prune(settings.backups, SystemClock(), db, destinations_of(settings), dry_run=dry_run)
            finally:
                await db.close()

        results = asyncio.run(go())
    verb = "would delete" if dry_run else "deleted"
    for result in results:
        for name in result.deleted:
            out.print(f"{verb} {result.destination}/{name}", highlight=False, markup=False)
        out.print(
            f"{result.destination}: kept {len(result.kept)}, {verb} {len(result.deleted)}",
            highlight=False,
            markup=False,
        )
