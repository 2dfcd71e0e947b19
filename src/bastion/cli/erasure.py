"""``bastion user erase EMAIL [--yes]``: erase an account and everything it holds
(GDPR art. 17), as ``DELETE /api/v1/me`` and the admin API do.

The command asks for the address again unless ``--yes`` (there is no undo:
the user's data key is destroyed, and the erasure ledger makes every restore
of an older backup erase them again). Registered into the ``user`` typer by
``register(users)``; the services are imported inside the command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.common import CommandError, DataDir, one_line_errors, out


def register(users: typer.Typer) -> None:
    users.command("erase")(erase)


def erase(
    email: Annotated[str, typer.Argument(help="The account's email address")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for the address again")] = False,
    data_dir: DataDir = None,
) -> None:
    """Erase a user: their records, data key, sessions, keys and grants, and the account;
    the audit events keep a keyed pseudonym. Cannot be undone."""
    with one_line_errors():
        if not yes:
            if not sys.stdin.isatty():
                raise CommandError("erasing cannot be undone: give --yes, or run it on a terminal to confirm")
            typed = str(typer.prompt(f"Type {email} again to erase the account"))
            if typed.strip() != email:
                raise CommandError("the address typed does not match; nothing was erased")
        pseudonym, records = _erase(email, data_dir)
    total = sum(records.values())
    out.print(f"erased {email}: {total} records; known from now on as {pseudonym}", highlight=False)


def _erase(email: str, data_dir: Path | None) -> tuple[str, dict[str, int]]:
    import asyncio

    from bastion.audit import Origin
    from bastion.clock import SystemClock
    from bastion.privacy.removal import AccountGone
    from bastion.runtime import build_services
    from bastion.settings import load_settings

    async def main() -> tuple[str, dict[str, int]]:
        services = build_services(load_settings(data_dir), SystemClock())
        try:
            user = await services.identity.by_email(services.db, email)
            if user is None:
                raise CommandError(f"no user with email {email}")
            assert services.eraser is not None  # noqa: S101 - build_services always makes it
            try:
                removal = await services.eraser.erase(user.id, origin=Origin.cli(), actor_id=None, via="cli")
            except AccountGone:
                raise CommandError(f"no user with email {email}") from None
            return removal.pseudonym, removal.records
        finally:
            await services.close()

    return asyncio.run(main())
