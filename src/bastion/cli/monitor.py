"""``bastion alerts …``: the detection rules' alerts, listed and acknowledged.

The services are imported inside the commands, so ``--help`` does not load them.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated

import typer

from bastion.cli.common import CommandError, DataDir, fail, out
from bastion.cli.identity import run

if TYPE_CHECKING:
    from bastion.monitor.alerts import AlertInfo
    from bastion.runtime import Services
    from bastion.uow import UnitOfWork

alerts = typer.Typer(help="Alerts raised by the detection rules.", no_args_is_help=True)


def _line(alert: AlertInfo) -> str:
    return (
        f"{alert.id}  {alert.severity:<8} {alert.rule:<22} {alert.status:<12} count={alert.count:<6} "
        f"first={alert.first_seen:%Y-%m-%dT%H:%M:%SZ} last={alert.last_seen:%Y-%m-%dT%H:%M:%SZ}  {alert.group_key}"
    )


@alerts.command("list")
def alerts_list(
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array instead of one line per alert.")] = False,
    include_all: Annotated[bool, typer.Option("--all", help="Acknowledged alerts too (default: open ones).")] = False,
    rule: Annotated[str | None, typer.Option(help="Only this rule's alerts.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many, newest first.")] = 1000,
    data_dir: DataDir = None,
) -> None:
    """List alerts, newest first: one per line, or a JSON array (rule, severity, first_seen, last_seen, count,
    status)."""
    import orjson

    from bastion.monitor.alerts import MAX_PAGE, AlertStore

    async def action(services: Services, uow: UnitOfWork) -> list[AlertInfo]:
        store = services.monitor.store if services.monitor else AlertStore(services.clock)
        found: list[AlertInfo] = []
        cursor = None
        while len(found) < limit:
            page, cursor = await store.page(
                uow.db, status=None if include_all else "open", rule=rule, cursor=cursor, limit=MAX_PAGE
            )
            found += page
            if cursor is None:
                break
        return found[:limit]

    found = run(data_dir, action)
    if as_json:
        out.file.write(orjson.dumps([alert.as_json() for alert in found], option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    for alert in found:
        out.print(_line(alert), highlight=False, markup=False)


@alerts.command("ack")
def alerts_ack(
    alert_id: Annotated[str, typer.Argument(metavar="ID", help="The alert's id (from `bastion alerts list`).")],
    data_dir: DataDir = None,
) -> None:
    """Acknowledge an alert (audited): it is closed; the same rule firing again opens a new one."""
    from bastion.monitor.alerts import AlertStore

    try:
        parsed = uuid.UUID(alert_id)
    except ValueError:
        fail(f"{alert_id!r} is not an alert id")

    async def action(services: Services, uow: UnitOfWork) -> AlertInfo:
        store = services.monitor.store if services.monitor else AlertStore(services.clock)
        alert = await store.acknowledge(uow.db, parsed, by="cli", origin=uow.origin)
        if alert is None:
            raise CommandError(f"no alert with id {alert_id}")
        return alert

    alert = run(data_dir, action)
    out.print(f"acknowledged {alert.id} ({alert.rule}, {alert.group_key})", highlight=False, markup=False)
