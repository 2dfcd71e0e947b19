"""``bastion backup``: keygen, create, verify, list (restore, drill and prune: cli/backup_ops.py).

Exit codes, for every command here: 0 done, 1 a backup is bad (tampered,
truncated, signed by an unknown key), 2 the command cannot run; one line
saying why. Progress bars go to stderr (only on a terminal), so stdout's last
line stays what scripts read: the recipient, the backup's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bastion.cli.common import CommandError, DataDir, err, fail, one_line_errors, out, read_key_file, settings_for

if TYPE_CHECKING:
    from rich.progress import Progress

    from bastion.audit import EventTag
    from bastion.backups.create import CreatedBackup
    from bastion.secrets import Keyrings
    from bastion.settings import Settings

backup = typer.Typer(help="Encrypted backups: keygen, create, verify, list.", no_args_is_help=True)

KeyFile = Annotated[
    Path | None,
    typer.Option(
        "--key",
        help="Notary public keys to trust (the file `bastion keys export-public` writes); "
        "default: the instance's own keystore.",
        show_default=False,
    ),
]
IdentityFile = Annotated[
    Path | None,
    typer.Option("--identity", help="The age identity file (from `backup keygen`): check everything inside."),
]


@contextlib.contextmanager
def backup_errors() -> Iterator[None]:
    """BackupInvalid → exit 1, BackupUnavailable → exit 2, each one line; then the CLI's own."""
    from bastion.backups.errors import BackupInvalid, BackupUnavailable

    with one_line_errors():
        try:
            yield
        except BackupInvalid as exc:
            fail(str(exc), 1)
        except BackupUnavailable as exc:
            fail(str(exc))


class BarReporter:
    """``bastion.backups.create.Reporter`` drawn as a rich progress bar on stderr."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None

    def stage(self, label: str, total: int | None) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(label, total=total)

    def advance(self, amount: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, amount)


def progress_bar() -> Progress:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


@backup.command("keygen")
def keygen(
    out_file: Annotated[Path, typer.Option("--out", help="Write the identity here (0600; never overwritten).")],
) -> None:
    """A new age identity for decrypting backups: keep the file OFFLINE (not on the server).

    The last line printed is its recipient (age1…): put it in `[backups] recipients`.
    """
    import datetime as dt

    from bastion.security.age import new_identity

    identity, recipient = new_identity()
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # age-keygen's own layout, so `age -d -i FILE` reads it as it is.
    text = f"# created: {created}\n# public key: {recipient}\n{identity}\n"
    with one_line_errors():
        try:
            fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise CommandError(f"{out_file} exists: an identity is never overwritten") from None
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(text)
    err.print(f"wrote the identity to {out_file}; keep it offline, the server needs only:", highlight=False)
    typer.echo(recipient)


async def _record(settings: Settings, tag: EventTag, success: object, details: dict[str, Any]) -> None:
    """A BACKUP_* event (outcome success when ``success`` is not None); best effort: the verdict
    is printed either way, and the database may be what cannot be reached."""
    from bastion.audit import Origin, Outcome, record_event
    from bastion.clock import SystemClock
    from bastion.db import open_database, transaction

    outcome = Outcome.SUCCESS if success is not None else Outcome.FAILURE
    try:
        db = open_database(settings.sqlalchemy_url)
        try:
            async with transaction(db) as tx:
                record_event(tx, SystemClock(), tag, origin=Origin.cli(), outcome=outcome, details=details)
        finally:
            await db.close()
    except Exception as exc:  # noqa: BLE001 - the outcome is printed either way; the record is best effort
        err.print(f"warning: the audit event could not be recorded ({type(exc).__name__})", highlight=False)


def _created_details(created: CreatedBackup) -> dict[str, Any]:
    return {
        "id": created.manifest.id,
        "name": created.manifest.name,
        "seconds": round(created.seconds, 3),
        "size": created.size,
        "destinations": list(created.copies),
    }


@backup.command("create")
def create(
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Write only here (a directory or s3://bucket/prefix) instead of \\[backups] dir and destinations.",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Back up the database (online: the server keeps serving), the keystore (encrypted by the master
    key, which is never included), bastion.toml and the TLS files, encrypted to \\[backups] recipients.

    The last line printed is the backup's path.
    """
    from bastion.audit import EventTag
    from bastion.backups.create import create_backup
    from bastion.backups.destinations import destination_for
    from bastion.backups.errors import BackupInvalid, BackupUnavailable
    from bastion.secrets import open_keyrings

    settings = settings_for(data_dir)
    with backup_errors():
        keys = open_keyrings(settings)
        targets = [destination_for(to, settings)] if to is not None else None
        try:
            with progress_bar() as progress:
                created = asyncio.run(
                    create_backup(settings, keys, destinations=targets, reporter=BarReporter(progress))
                )
        except (BackupUnavailable, BackupInvalid, OSError) as exc:
            asyncio.run(_record(settings, EventTag.BACKUP_CREATE, None, {"reason": str(exc)}))
            raise
        asyncio.run(_record(settings, EventTag.BACKUP_CREATE, created, _created_details(created)))
    err.print(
        f"backup {created.manifest.id}: {created.size} bytes in {created.seconds:.1f} s, "
        f"in {len(created.copies)} destination(s)",
        highlight=False,
    )
    typer.echo(created.location)


def trusted_keys(data_dir: Path | None, key_file: Path | None) -> tuple[list[str], Settings | None]:
    """The notary keys to trust: the --key file's, else the live keystore's; and the settings if loaded."""
    if key_file is not None:
        from bastion.settings import load_settings

        vkeys = read_key_file(key_file)
        settings: Settings | None = None
        with contextlib.suppress(Exception):
            settings = load_settings(data_dir)  # quietly: with --key, no loadable instance is fine
        return vkeys, settings
    from bastion.backups.create import trusted_vkeys
    from bastion.secrets import open_keyrings

    settings = settings_for(data_dir)
    keys: Keyrings = open_keyrings(settings)
    return trusted_vkeys(settings, keys), settings


@backup.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="The backup file (.tar.zst.age); its .manifest lies beside it.")],
    identity: IdentityFile = None,
    key: KeyFile = None,
    scratch_url: Annotated[
        str | None,
        typer.Option(
            "--scratch-url",
            help="PostgreSQL backups: a server (postgresql+asyncpg://…) to restore on into a temporary "
            "database; default: the instance's own.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Check a backup: its sidecar manifest's signature and the file's SHA-256; with --identity,
    decrypt it and check every part, open the database (integrity_check, or a scratch pg_restore)
    and compare every table with the manifest. Exit 0 good, 1 bad, 2 cannot check."""
    from bastion.audit import EventTag
    from bastion.backups.errors import BackupInvalid
    from bastion.backups.snapshot import database_kind
    from bastion.backups.verify import verify_backup

    with backup_errors():
        vkeys, settings = trusted_keys(data_dir, key)
        identity_text = None
        if identity is not None:
            try:
                identity_text = identity.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"{identity}: cannot be read ({exc})") from None
        if scratch_url is None and settings is not None and database_kind(settings.sqlalchemy_url) == "postgresql":
            scratch_url = settings.sqlalchemy_url
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        with progress_bar() as progress:
            # The file is read once for its hash, and once more to decrypt it with the identity.
            size = file.stat().st_size
            task = progress.add_task("verifying", total=size * 2 if identity_text else size)
            try:
                manifest = asyncio.run(
                    verify_backup(
                        file,
                        vkeys,
                        identity_text=identity_text,
                        scratch_url=scratch_url,
                        progress=lambda n: progress.advance(task, n),
                        work_dir=settings.data_dir if settings is not None and settings.data_dir.is_dir() else None,
                    )
                )
            except BackupInvalid as exc:
                if key is None and settings is not None:
                    asyncio.run(
                        _record(settings, EventTag.BACKUP_VERIFY, None, {"file": file.name, "reason": str(exc)})
                    )
                raise
        if key is None and settings is not None:
            details = {"id": manifest.id, "name": manifest.name, "full": identity_text is not None}
            asyncio.run(_record(settings, EventTag.BACKUP_VERIFY, manifest.id, details))
    checked = "every part, the database and its tables" if identity_text else "signature and file hash"
    out.print(f"good: {manifest.id} ({checked})", highlight=False, markup=False)


@backup.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of a table.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Every backup in every destination (\\[backups] dir, then destinations), oldest first; a backup
    is complete only with a sidecar manifest signed by this instance's notary key."""
    import json

    from bastion.backups.archive import list_backups
    from bastion.backups.create import trusted_vkeys
    from bastion.backups.destinations import destinations_of
    from bastion.secrets import open_keyrings

    settings = settings_for(data_dir)
    rows: list[dict[str, Any]] = []
    with backup_errors():
        vkeys = trusted_vkeys(settings, open_keyrings(settings))
        for destination in destinations_of(settings):
            for info in list_backups(destination, vkeys):
                rows.append(
                    {
                        "id": info.id,
                        "name": info.name,
                        "created_at": info.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "size": info.size,
                        "complete": info.complete,
                        "destination": destination.name,
                        "reason": info.reason,
                    }
                )
    if as_json:
        typer.echo(json.dumps({"backups": rows}, indent=2))
        return
    if not rows:
        out.print("no backups", highlight=False)
        return
    from rich.table import Table

    table = Table(box=None, highlight=False)
    for column in ("id", "created", "size", "state", "destination"):
        table.add_column(column, no_wrap=column != "state")
    for row in rows:
        state = "complete" if row["complete"] else f"INCOMPLETE ({row['reason']})"
        table.add_row(row["id"], row["created_at"], str(row["size"] or "-"), state, row["destination"])
    out.print(table)
