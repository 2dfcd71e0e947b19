"""``bastion incident …``: the tools for the bad day (docs/incident-response.md).

- ``lockdown on --reason R | off | status``: the lockdown row every process
  reads within ``incident.state_refresh`` (bastion.incident.state);
- ``revoke-all [--sessions] [--api-keys] [--oauth]``: every chosen credential
  stops at its next use on every instance (the ``principals`` epoch moves
  with each revocation, so no process keeps a cached principal);
- ``export --since T [--until T] --out FILE``: the signed forensic bundle.

Each change is audited in the same transaction as the change itself. The
services are imported inside the commands, so ``bastion incident --help``
does not load the server.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bastion.cli.common import DataDir, fail, one_line_errors, out, parse_when

if TYPE_CHECKING:
    from bastion.db import Database
    from bastion.runtime import Services
    from bastion.secrets import Keyrings
    from bastion.settings import Settings
    from bastion.uow import UnitOfWork

incident = typer.Typer(
    help="Incident response: lockdown, revoke every credential, forensic export.", no_args_is_help=True
)


@incident.command("lockdown")
def lockdown(
    state: Annotated[str, typer.Argument(help="on, off or status.", show_default=False)],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (required with on; audited).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Refuse sign-ins (except admins with MFA) and writes on every instance within a second; reads go on."""
    from bastion.cli.identity import run

    if state not in {"on", "off", "status"}:
        fail("the state is on, off or status")
    if state == "on" and not (reason or "").strip():
        fail("lockdown on needs --reason (it is audited)")
    if reason is not None and len(reason) > 512:
        fail("the reason is at most 512 characters")

    async def action(services: Services, uow: UnitOfWork) -> Any:
        from bastion.incident.state import read_lockdown

        if state == "status":
            return await read_lockdown(uow.db)
        return await set_lockdown(services, uow, on=state == "on", reason=reason)

    result = run(data_dir, action)
    if state == "status":
        since = result.since.isoformat() if result.since else "-"
        out.print(f"lockdown {'on' if result.on else 'off'} since {since} by {result.by or '-'}", highlight=False)
        if result.on:
            out.print(f"reason: {result.reason}", highlight=False, markup=False)
        return
    out.print(f"lockdown {state}: every instance applies it within {_refresh(data_dir)}", highlight=False)


def _refresh(data_dir: Path | None) -> str:
    from bastion.settings import load_settings

    return f"{load_settings(data_dir).incident.state_refresh:g} s"


async def set_lockdown(services: Services, uow: UnitOfWork, *, on: bool, reason: str | None, by: str = "cli") -> Any:
    """Turn lockdown on or off and audit it, in ``uow``; this process sees it at once."""
    from bastion.audit import EventTag, record_event
    from bastion.incident import state

    changed = await state.set_lockdown(
        uow.db, on=on, reason=(reason or "").strip() or None, by=by, now=services.clock.now()
    )
    tag = EventTag.LOCKDOWN_ON if on else EventTag.LOCKDOWN_OFF
    record_event(uow.db, services.clock, tag, origin=uow.origin, details={"reason": changed.reason, "by": by})
    # Alerting: the detection tail (bastion.monitor) reads this event like any other;
    # the built-in rules lockdown-on and lockdown-off raise an alert on it.
    services.lockdown.forget()
    return changed


@incident.command("revoke-all")
def revoke_all_command(
    sessions: Annotated[
        bool, typer.Option("--sessions", help="End every sign-in session (and its refresh tokens).")
    ] = False,
    api_keys: Annotated[bool, typer.Option("--api-keys", help="Revoke every API key.")] = False,
    oauth: Annotated[
        bool, typer.Option("--oauth", help="Revoke every OAuth grant (access and refresh tokens) and pending code.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Every chosen credential stops working at its next use, on every instance."""
    from bastion.cli.identity import run

    if not (sessions or api_keys or oauth):
        fail("choose at least one of --sessions, --api-keys, --oauth")

    async def action(services: Services, uow: UnitOfWork) -> dict[str, int]:
        return await revoke_all(services, uow, sessions=sessions, api_keys=api_keys, oauth=oauth)

    counts = run(data_dir, action)
    out.print(", ".join(f"{name}: {count} revoked" for name, count in counts.items()), highlight=False)


async def revoke_all(
    services: Services, uow: UnitOfWork, *, sessions: bool, api_keys: bool, oauth: bool
) -> dict[str, int]:
    """Revoke every live credential of the chosen kinds in ``uow``; how many of each.

    Each UPDATE raises the ``principals`` epoch through the tables' triggers,
    so every process drops its cached principals at its next request; refresh
    tokens and grants are refused at the token endpoints because their
    session or grant is revoked. One REVOKE_ALL event records the counts.
    """
    from sqlalchemy import update

    from bastion.access.models import ApiKey
    from bastion.audit import EventTag, record_event
    from bastion.oauth.token import revoke_everything
    from bastion.sessions.models import Session

    now = services.clock.now()
    counts: dict[str, int] = {}
    if sessions:
        counts["sessions"] = await uow.db.execute(
            update(Session).where(Session.revoked_at.is_(None)).values(revoked_at=now, revoke_reason="incident")
        )
    if api_keys:
        counts["api_keys"] = await uow.db.execute(
            update(ApiKey).where(ApiKey.revoked_at.is_(None)).values(revoked_at=now)
        )
    if oauth:
        counts["oauth_grants"], counts["oauth_codes"] = await revoke_everything(uow.db, reason="incident", now=now)
    record_event(uow.db, services.clock, EventTag.REVOKE_ALL, origin=uow.origin, details=dict(counts))
    return counts


@incident.command("export")
def export(
    since: Annotated[str, typer.Option("--since", help="RFC 3339 time or a duration ago (24h, 7d).")],
    out_file: Annotated[Path, typer.Option("--out", help="The bundle to write (.tar.gz); must not exist.")],
    until: Annotated[
        str | None, typer.Option("--until", help="RFC 3339 time or a duration ago [default: now].")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Write the signed forensic bundle: audit events, alerts, blocks, posture, configuration without secrets."""
    from bastion.cli.audit import _run

    now = dt.datetime.now(dt.UTC)
    with one_line_errors():
        start = parse_when(since, now)
        end = parse_when(until, now) if until is not None else now
    if end < start:
        fail("--until is before --since")
    if out_file.exists():
        fail(f"{out_file} exists; choose a new file")
    if not out_file.parent.is_dir():
        fail(f"{out_file.parent} is not a directory")

    async def work(settings: Settings, keys: Keyrings, db: Database) -> dict[str, int]:
        from bastion.cli.forensics import write_bundle

        return await write_bundle(settings, keys, db, start=start, end=end, out=out_file)

    sizes = _run(data_dir, work)
    out.print(f"wrote {out_file}: " + ", ".join(f"{name} {size} B" for name, size in sizes.items()), highlight=False)


__all__ = ["incident", "revoke_all", "set_lockdown"]
