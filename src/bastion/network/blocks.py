"""Blocked addresses and networks: the table, and each process's view of it.

``BlockList`` stores blocks (``blocks``, bastion.network.models) and answers
``is_blocked(address)`` for the network guard on every request of the public
listener. The answer comes from a per-process copy of the live blocks, read
again at most every ``incident.state_refresh`` seconds (0.5 s by default): a
block added by any process, the command line or an admin API call is
refused by every process at its next request within that bound plus one
query, the 1 s the issue asks for. The read is one small query (the live
rows only); a request never waits for it while a copy is fresh, and only
one request per process refreshes at a time.

Matching costs one set lookup per prefix length in use, not one comparison
per block: ``{32: {"203.0.113.7"}, 24: {"198.51.100.0"}}``. With no live
block at all (the usual case) the guard pays a dictionary check.

Blocks expire (``expires_at``); expired rows are ignored at once by the
copy (its own clock check) and deleted on the way by ``add``. Auditing the
changes is the caller's (``bastion.monitor.actions``): this layer sits
below the audit log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any

import anyio
from sqlalchemy import delete, func, insert, or_, select

from bastion.clock import Clock
from bastion.db import Database, Transaction
from bastion.logging import get_logger
from bastion.network.ipfilter import Network
from bastion.network.models import Block

log = get_logger("bastion.network")

MANUAL = "manual"
AUTO = "auto"

_BLOCKS = select(
    Block.id, Block.network, Block.reason, Block.source, Block.rule, Block.created_at, Block.expires_at,
    Block.created_by,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BlockInfo:
    id: uuid.UUID
    network: str
    reason: str
    source: str
    rule: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    created_by: str | None

    @classmethod
    def of(cls, row: Any) -> BlockInfo:
        """The block of a row with ``_BLOCKS``'s columns."""
        return cls(*row)


class InvalidNetwork(ValueError):
    """Not an address or a CIDR network (``203.0.113.7``, ``198.51.100.0/24``, ``2001:db8::/64``)."""


def parse_network(text: str) -> Network:
    """``text`` as a network; an address is its /32 or /128. Host bits must be zero
    (``198.51.100.7/24`` is refused, not silently widened), and IPv4-mapped IPv6
    addresses are their IPv4 address."""
    try:
        network = ip_network(text.strip(), strict=True)
    except ValueError:
        raise InvalidNetwork(f"{text[:64]!r} is not an address or a CIDR network") from None
    if network.version == 6 and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ip_network(f"{mapped}/{network.prefixlen - 96}")
    return network


def network_of(address: str, prefix: int | None = None) -> Network:
    """The network of ``address``: its /32 or /128, or its /``prefix`` (host bits cleared)."""
    ip = _address(address)
    if ip is None:
        raise InvalidNetwork(f"{address[:64]!r} is not an address")
    return ip_network(f"{ip}/{ip.max_prefixlen if prefix is None else prefix}", strict=False)


def _address(text: str) -> IPv4Address | IPv6Address | None:
    try:
        ip = ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        # ::ffff:203.0.113.7 is 203.0.113.7: a v4 block must not be sidestepped.
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class _Snapshot:
    """The live blocks as one process last read them."""

    # (version, prefix length) -> the networks of that length, each as its
    # address's top ``prefix`` bits: an address matches if its own top bits
    # are in the set (integer shifts, not ip_network objects: ~1 µs a length).
    by_prefix: dict[tuple[int, int], frozenset[int]]
    # The earliest expiry among them: the copy is stale from then on.
    earliest_expiry: dt.datetime | None
    loaded_at: float

    @classmethod
    def of(cls, rows: Sequence[tuple[str, dt.datetime | None]], loaded_at: float) -> _Snapshot:
        by_prefix: dict[tuple[int, int], set[int]] = {}
        expiries = [expires for _, expires in rows if expires is not None]
        for text, _ in rows:
            try:
                network = parse_network(text)
            except InvalidNetwork:
                continue  # written by hand into the table: never matches, never crashes the guard
            shift = network.max_prefixlen - network.prefixlen
            by_prefix.setdefault((network.version, network.prefixlen), set()).add(int(network.network_address) >> shift)
        frozen = {key: frozenset(values) for key, values in by_prefix.items()}
        return cls(frozen, min(expiries) if expiries else None, loaded_at)

    def covers(self, version: int, value: int) -> bool:
        """Whether a block covers the address ``value`` (its integer) of IP ``version``."""
        bits = 32 if version == 4 else 128
        return any(
            kind == version and value >> (bits - prefix) in networks
            for (kind, prefix), networks in self.by_prefix.items()
        )


def _address_value(text: str) -> tuple[int, int] | None:
    """(version, integer) of an address, IPv4-mapped IPv6 as IPv4; None if it is not one.

    ``inet_pton`` rather than ``ipaddress``: a quarter of the cost, on a path
    every request of the public listener takes while any block is in force.
    """
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):
        pass
    try:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0]), "big")
    except (OSError, ValueError):
        return None
    if value >> 32 == 0xFFFF:  # ::ffff:a.b.c.d is a.b.c.d: a v4 block must not be sidestepped
        return 4, value & 0xFFFFFFFF
    return 6, value


_EMPTY = _Snapshot({}, None, float("-inf"))


class BlockList:
    """The ``blocks`` table, and this process's cached view of its live rows."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        refresh: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.clock = clock
        self.refresh = refresh
        self.monotonic = monotonic
        self._snapshot = _EMPTY
        self._reading = anyio.Lock()

    # --- the guard's question -------------------------------------------

    async def is_blocked(self, address: str) -> bool:
        """Whether a live block covers ``address`` (as the copy at most ``refresh`` s old says).

        An address that does not parse is not blocked here: the listener's
        own IP policy refuses what it cannot parse when it has rules.
        """
        snapshot = await self._current()
        if not snapshot.by_prefix:
            return False
        parsed = _address_value(address)
        if parsed is None or not snapshot.covers(*parsed):
            return False
        # A block that expired since the copy was read: re-read before refusing.
        if snapshot.earliest_expiry is not None and snapshot.earliest_expiry <= self.clock.now():
            return (await self._reload(force=True)).covers(*parsed)
        return True

    async def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if self.monotonic() - snapshot.loaded_at < self.refresh:
            return snapshot
        if self._reading.locked():
            # Another request of this process is reading: the copy in hand is at
            # most one query older than the bound, and nobody queues behind it.
            return snapshot
        return await self._reload()

    async def _reload(self, *, force: bool = False) -> _Snapshot:
        async with self._reading:
            started = self.monotonic()
            if not force and started - self._snapshot.loaded_at < self.refresh:
                return self._snapshot  # read meanwhile by the request this one waited for
            try:
                rows = await self.db.all(
                    select(Block.network, Block.expires_at).where(
                        or_(Block.expires_at.is_(None), Block.expires_at > self.clock.now())
                    )
                )
            except Exception:  # noqa: BLE001 - the guard must answer; the database's own errors are logged there
                log.warning("block list unreadable; keeping the last copy")
                # Try again at the next interval, not at every request.
                self._snapshot = _Snapshot(self._snapshot.by_prefix, self._snapshot.earliest_expiry, started)
                return self._snapshot
            self._snapshot = _Snapshot.of([(row.network, row.expires_at) for row in rows], started)
            return self._snapshot

    def forget(self) -> None:
        """Mark the copy stale (after a change made in this process): the next question reads the table.

        The blocks in it still apply meanwhile; dropping them would let
        every blocked address through while the re-read runs.
        """
        current = self._snapshot
        self._snapshot = _Snapshot(current.by_prefix, current.earliest_expiry, float("-inf"))

    # --- the table --------------------------------------------------------

    async def add(
        self,
        tx: Transaction,
        network: Network,
        *,
        for_seconds: float | None,
        reason: str,
        source: str,
        rule: str | None = None,
        by: str | None = None,
    ) -> BlockInfo:
        """Block ``network`` for ``for_seconds`` (None: until removed); expired rows are purged on the way.

        A network already blocked gets one more row, not a changed one: the
        longer of the two wins by itself, and each row keeps its reason.
        """
        now = self.clock.now()
        await tx.execute(delete(Block).where(Block.expires_at <= now))
        block = BlockInfo(
            id=uuid.uuid4(),
            network=str(network),
            reason=reason[:256],
            source=source,
            rule=rule,
            created_at=now,
            expires_at=None if for_seconds is None else now + dt.timedelta(seconds=for_seconds),
            created_by=None if by is None else by[:320],
        )
        await tx.execute(insert(Block), dataclasses.asdict(block))
        return block

    async def remove(self, tx: Transaction, target: uuid.UUID | Network) -> list[BlockInfo]:
        """Remove the block with this id, or every block of this network; the blocks removed."""
        where = Block.id == target if isinstance(target, uuid.UUID) else Block.network == str(target)
        rows = await tx.all(_BLOCKS.where(where))
        if rows:
            await tx.execute(delete(Block).where(where))
        return [BlockInfo.of(row) for row in rows]

    async def live(self, db: Database | Transaction) -> list[BlockInfo]:
        """The blocks in force now, newest first."""
        now = self.clock.now()
        rows = await db.all(
            _BLOCKS.where(or_(Block.expires_at.is_(None), Block.expires_at > now)).order_by(
                Block.created_at.desc(), Block.id
            )
        )
        return [BlockInfo.of(row) for row in rows]

    async def live_auto(self, db: Database | Transaction) -> int:
        """How many automatic blocks are in force (``monitor.max_auto_blocks`` caps them)."""
        now = self.clock.now()
        count: int = await db.value(
            select(func.count())
            .select_from(Block)
            .where(Block.source == AUTO, or_(Block.expires_at.is_(None), Block.expires_at > now))
        )
        return count
