"""``bastion block list | add | remove``: blocked addresses and networks.

Every running process refuses a new block at its next request within
``incident.state_refresh`` (0.5 s by default); each change is audited
(``monitor:block:add`` / ``monitor:block:remove``). The services are
imported inside the commands, so ``--help`` does not load them.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Annotated

import typer

from bastion.cli.common import CommandError, DataDir, one_line_errors, out, parse_cli_duration
from bastion.cli.identity import run

if TYPE_CHECKING:
    from bastion.network.blocks import BlockInfo
    from bastion.network.ipfilter import Network
    from bastion.runtime import Services
    from bastion.uow import UnitOfWork

block = typer.Typer(
    name="block", help="Blocked addresses and networks (refused on the public listener).", no_args_is_help=True
)


def _line(info: BlockInfo) -> str:
    until = info.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if info.expires_at else "never"
    rule = f" rule={info.rule}" if info.rule else ""
    return f"{info.id}  {info.network}  {info.source}  until {until}{rule}  {info.reason}"


def _json(info: BlockInfo) -> dict[str, object]:
    return {
        "id": str(info.id),
        "network": info.network,
        "source": info.source,
        "rule": info.rule,
        "reason": info.reason,
        "created_at": info.created_at.isoformat(),
        "expires_at": info.expires_at.isoformat() if info.expires_at else None,
        "created_by": info.created_by,
    }


@block.command("list")
def block_list(
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array instead of one block per line.")] = False,
    data_dir: DataDir = None,
) -> None:
    """The blocks in force, newest first: id, network, source (manual|auto), expiry, rule, reason."""

    async def action(services: Services, uow: UnitOfWork) -> list[BlockInfo]:
        return await services.blocks.live(uow.db)

    blocks = run(data_dir, action)
    if as_json:
        out.print(json.dumps([_json(info) for info in blocks], indent=2), highlight=False, markup=False)
        return
    for info in blocks:
        out.print(_line(info), highlight=False, markup=False)


@block.command("add")
def block_add(
    target: Annotated[
        str, typer.Argument(metavar="ADDRESS_OR_CIDR", help="203.0.113.7, 198.51.100.0/24, 2001:db8::/64")
    ],
    for_: Annotated[str, typer.Option("--for", metavar="DURATION", help="How long: 30s, 15m, 2h, 7d.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept with the block).")] = "manual block",
    data_dir: DataDir = None,
) -> None:
    """Block an address or network on the public listener of every process, for a time."""
    from bastion.monitor.actions import add_block
    from bastion.network.blocks import InvalidNetwork, parse_network

    with one_line_errors():
        try:
            network = parse_network(target)
        except InvalidNetwork as exc:
            raise CommandError(str(exc)) from None
        try:
            seconds = parse_cli_duration(for_)
        except CommandError as exc:
            raise CommandError(f"--for: {exc}") from None
        if len(reason) > 256:
            raise CommandError("--reason: at most 256 characters")

    async def action(services: Services, uow: UnitOfWork) -> BlockInfo:
        return await add_block(
            uow, services.blocks, services.clock, network, for_seconds=seconds, reason=reason, by="cli"
        )

    info = run(data_dir, action)
    out.print(_line(info), highlight=False, markup=False)


@block.command("remove")
def block_remove(
    target: Annotated[
        str, typer.Argument(metavar="ADDRESS_OR_CIDR|ID", help="A block's id, or every block of a network.")
    ],
    data_dir: DataDir = None,
) -> None:
    """Lift a block (by id) or every block of an address or network."""
    from bastion.monitor.actions import remove_block
    from bastion.network.blocks import InvalidNetwork, parse_network

    with one_line_errors():
        try:
            key: uuid.UUID | Network = uuid.UUID(target)
        except ValueError:
            try:
                key = parse_network(target)
            except InvalidNetwork:
                raise CommandError(f"{target[:64]!r} is neither a block id nor an address or CIDR network") from None

    async def action(services: Services, uow: UnitOfWork) -> list[BlockInfo]:
        removed = await remove_block(uow, services.blocks, services.clock, key)
        if not removed:
            raise CommandError(f"no block matches {target[:64]}")
        return removed

    for info in run(data_dir, action):
        out.print(f"removed {_line(info)}", highlight=False, markup=False)
