"""``bastion user export`` and ``bastion privacy purge``: a user's data handed
back, and the retention purge run once (docs/privacy.md).

Nothing here imports the server at the top: ``bastion --help`` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bastion.cli.common import CommandError, DataDir, fail, out
from bastion.cli.identity import run

if TYPE_CHECKING:
    from bastion.privacy.retention import Purged
    from bastion.runtime import Services
    from bastion.uow import UnitOfWork

privacy = typer.Typer(help="Retention of personal data.", no_args_is_help=True)


def register(users: typer.Typer) -> None:
    """Add ``export`` to ``bastion user``."""
    users.command("export")(export)


def export(
    email: str,
    out_file: Annotated[Path, typer.Option("--out", help="The JSON file to write (mode 0600, never overwritten).")],
    data_dir: DataDir = None,
) -> None:
    """Write everything Bastion holds about a user to one JSON file (docs/privacy.md)."""
    # Refused before anything is read (or audited as exported).
    if out_file.exists():
        fail(f"{out_file} already exists: choose another --out")
    if not out_file.parent.is_dir():
        fail(f"{out_file.parent} is not a directory")

    async def action(services: Services, uow: UnitOfWork) -> bytes:
        from bastion.privacy.export import Sources, encode, export_user

        user = await services.identity.by_email(uow.db, email)
        if user is None:
            raise CommandError(f"no user with email {email}")
        document = await export_user(uow, services.clock, user.id, sources=Sources.of(services), via="cli")
        return encode(document)

    data = run(data_dir, action)
    try:
        # Exclusive and owner-only: the file is the user's whole account.
        fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        fail(f"{out_file}: {exc.strerror or exc}")
    out.print(f"exported {email} to {out_file}", highlight=False)


def _lines(purged: Purged, verb: str) -> list[str]:
    counts: dict[str, Any] = {
        "audit events": purged.audit_events,
        "ended sessions": purged.sessions,
        "unverified accounts": purged.unverified_accounts,
        "outbox mails": purged.outbox_mails,
    }
    return [f"{verb} {count} {what}" for what, count in counts.items()]


@privacy.command("purge")
def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be purged.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Purge now what is older than its privacy.*_retention setting (serve does it every retention_interval)."""

    async def action(services: Services, uow: UnitOfWork) -> Purged:
        from bastion.audit import Origin

        assert services.retention is not None  # noqa: S101 - build_services always sets it
        if dry_run:
            return await services.retention.count()
        return await services.retention.purge(origin=Origin.cli())

    purged = run(data_dir, action)
    for line in _lines(purged, "would purge" if dry_run else "purged"):
        out.print(line, highlight=False)
