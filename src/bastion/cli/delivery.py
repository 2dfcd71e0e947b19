"""``bastion alerts deliveries`` and ``bastion alerts redeliver``: where each
alert went, the dead letters, and sending one again once its receiver is fixed.

Registered on the ``alerts`` group of ``bastion.cli.monitor`` (``register``).
Webhook URLs are shown by their origin only: receivers often carry a token
in the path.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated

import typer

from bastion.cli.common import CommandError, DataDir, fail, out
from bastion.cli.identity import run

if TYPE_CHECKING:
    from bastion.monitor.delivery import Delivery
    from bastion.runtime import Services
    from bastion.uow import UnitOfWork


def _line(delivery: Delivery) -> str:
    when = f"{delivery.delivered_at:%Y-%m-%dT%H:%M:%SZ}" if delivery.delivered_at else "-"
    return (
        f"{delivery.id}  {delivery.status:<9} {delivery.channel:<7} attempts={delivery.attempts:<3} "
        f"alert={delivery.alert_id} delivered={when}  {delivery.shown_target}"
        + (f"  last_error={delivery.last_error}" if delivery.last_error else "")
    )


def _as_json(delivery: Delivery) -> dict[str, object]:
    return {
        "id": str(delivery.id),
        "alert_id": str(delivery.alert_id),
        "channel": delivery.channel,
        "target": delivery.shown_target,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": delivery.next_attempt_at.isoformat(),
        "created_at": delivery.created_at.isoformat(),
        "delivered_at": delivery.delivered_at.isoformat() if delivery.delivered_at else None,
        "last_error": delivery.last_error,
    }


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(f"{value!r} is not {what}")


def deliveries(
    alert_id: Annotated[str | None, typer.Option("--alert", help="Only this alert's deliveries.")] = None,
    status: Annotated[
        str | None, typer.Option(help="Only pending, delivered or dead ones (dead letters: every attempt failed).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array instead of one line per delivery.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many, newest first.")] = 200,
    data_dir: DataDir = None,
) -> None:
    """List alert deliveries (webhooks, mail), newest first: status, attempts, last error."""
    import orjson

    from bastion.monitor.delivery import DEAD, DELIVERED, PENDING, list_deliveries

    alert = _uuid(alert_id, "an alert id") if alert_id is not None else None
    if status is not None and status not in (PENDING, DELIVERED, DEAD):
        fail(f"--status is pending, delivered or dead, not {status!r}")
    statuses = [status] if status else []

    async def action(services: Services, uow: UnitOfWork) -> list[Delivery]:
        return await list_deliveries(uow.db, alert_id=alert, statuses=statuses, limit=limit)

    found = run(data_dir, action)
    if as_json:
        out.file.write(orjson.dumps([_as_json(d) for d in found], option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    for delivery in found:
        out.print(_line(delivery), highlight=False, markup=False)


def redeliver(
    delivery_id: Annotated[
        str, typer.Argument(metavar="ID", help="A dead delivery's id (`alerts deliveries --dead`).")
    ],
    data_dir: DataDir = None,
) -> None:
    """Send a dead letter again from its first attempt (after fixing the receiver); the running server sends it."""
    from bastion.monitor.delivery import retry_dead

    parsed = _uuid(delivery_id, "a delivery id")

    async def action(services: Services, uow: UnitOfWork) -> None:
        if not await retry_dead(uow.db, parsed, now=services.clock.now()):
            raise CommandError(f"no dead delivery with id {delivery_id}")

    run(data_dir, action)
    out.print(f"{delivery_id} will be sent again", highlight=False, markup=False)


def register(alerts: typer.Typer) -> None:
    """Add ``deliveries`` and ``redeliver`` to the ``alerts`` command group."""
    alerts.command("deliveries")(deliveries)
    alerts.command("redeliver")(redeliver)
