"""``bastion user …`` and ``bastion sessions …``: thin commands over the services.

The services are imported inside the commands, so ``bastion user --help``
does not load the server.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from bastion.cli.common import CommandError, DataDir, err, fail, one_line_errors, out

if TYPE_CHECKING:
    from bastion.identity.models import Account
    from bastion.runtime import Services
    from bastion.uow import UnitOfWork

users = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
sessions = typer.Typer(help="Manage sign-in sessions.", no_args_is_help=True)

T = TypeVar("T")


def run(data_dir: Path | None, action: Callable[[Services, UnitOfWork], Awaitable[T]]) -> T:
    """Run ``action`` in one transaction against the instance in ``data_dir``:
    a refusal anywhere in it stores nothing."""
    import asyncio

    from bastion.audit import Origin
    from bastion.clock import SystemClock
    from bastion.runtime import build_services
    from bastion.settings import load_settings
    from bastion.uow import open_unit_of_work

    async def main() -> T:
        services = build_services(load_settings(data_dir), SystemClock())
        try:
            async with open_unit_of_work(services.db, Origin.cli(), services.postman.deliver) as uow:
                return await action(services, uow)
        finally:
            await services.close()

    with one_line_errors():
        return asyncio.run(main())


async def _user(services: Services, uow: UnitOfWork, email: str) -> Account:
    user = await services.identity.by_email(uow.db, email)
    if user is None:
        raise CommandError(f"no user with email {email}")
    return user


def _read_password(from_stdin: bool) -> str | None:
    """Never from an argument: argv is visible to every user through ps.

    On a terminal the password is asked for, twice, without echo, with or
    without ``--password-stdin``; a pipe gives its first line.
    """
    if sys.stdin.isatty():
        return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CommandError("--password-stdin was given but standard input had no password")
        return password
    return None


@users.command("create")
def create(
    email: Annotated[str, typer.Option("--email", help="The user's email address.")],
    role: Annotated[str, typer.Option("--role", help="Role to grant (one that exists).")] = "user",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    verified: Annotated[bool, typer.Option("--verified", help="Mark the email address as verified.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Create a user. Without a password the user sets one through the reset flow."""
    with one_line_errors():
        password = _read_password(password_stdin)

    async def action(services: Services, uow: UnitOfWork) -> Account:
        from bastion.identity.errors import WeakPassword

        await services.access.check_roles(uow.db, [role])
        try:
            return await services.identity.create_user(uow, email, password, roles=[role], verified=verified)
        except WeakPassword as weak:
            raise CommandError("password refused: " + "; ".join(weak.extra.get("problems", []))) from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None

    user = run(data_dir, action)
    out.print(f"created {user.email} ({user.id}) with role {role}", highlight=False)


@users.command("list")
def list_users(data_dir: DataDir = None) -> None:
    """List users."""
    from rich.table import Table

    async def action(services: Services, uow: UnitOfWork) -> list[tuple[Account, list[str]]]:
        return await services.identity.list_users(uow.db)

    table = Table("email", "id", "roles", "verified", "mfa", "state")
    for user, roles in run(data_dir, action):
        state = "disabled" if user.disabled else ("locked" if user.locked_until else "active")
        table.add_row(
            user.email,
            str(user.id),
            ",".join(roles),
            "yes" if user.email_verified_at else "no",
            "yes" if user.totp_enabled else "no",
            state,
        )
    out.print(table)


@users.command("lock")
def lock(email: str, data_dir: DataDir = None) -> None:
    """Disable a user and end all their sessions."""

    async def action(services: Services, uow: UnitOfWork) -> None:
        user = await _user(services, uow, email)
        await services.identity.lock(uow, user)
        await services.sessions.revoke_all(uow, user.id, reason="admin_lock")

    run(data_dir, action)
    out.print(f"locked {email}", highlight=False)


@users.command("unlock")
def unlock(email: str, data_dir: DataDir = None) -> None:
    """Re-enable a user and lift any lockout."""

    async def action(services: Services, uow: UnitOfWork) -> None:
        from bastion.http.problems import NotReady
        from bastion.identity.throttle import restore_sign_in

        user = await _user(services, uow, email)
        await services.identity.unlock(uow, user)
        try:
            await restore_sign_in(services.rate_limiter, services.settings, user.email)
        except NotReady:
            err.print(
                "[yellow]warning:[/] Redis is unreachable: the sign-in throttle lifts by itself within its window"
            )

    run(data_dir, action)
    out.print(f"unlocked {email}", highlight=False)


@users.command("set-role")
def set_role(email: str, role: str, data_dir: DataDir = None) -> None:
    """Make ROLE (one that exists) the user's role."""

    async def action(services: Services, uow: UnitOfWork) -> None:
        await services.access.set_roles(uow, await _user(services, uow, email), [role])

    run(data_dir, action)
    out.print(f"{email} now has role {role}", highlight=False)


@sessions.command("revoke")
def revoke(
    user: Annotated[str | None, typer.Option("--user", help="Email of the user whose sessions to end.")] = None,
    all_users: Annotated[bool, typer.Option("--all", help="End every session of every user.")] = False,
    data_dir: DataDir = None,
) -> None:
    """End sessions at once: their access and refresh tokens stop working."""
    if (user is None) == (not all_users):
        fail("give exactly one of --user EMAIL or --all")

    async def action(services: Services, uow: UnitOfWork) -> int:
        user_id = (await _user(services, uow, user)).id if user else None
        return await services.sessions.revoke_all(uow, user_id, reason="admin")

    count = run(data_dir, action)
    out.print(f"revoked {count} session(s)")
