"""Known devices: a sign-in from a network and browser an account has not
used before mails the account's owner (not the admins).

The detection tail hands every batch of signals to ``KnownDevices.consume``;
a successful sign-in (``auth:login`` success, which every password, MFA and
provider sign-in ends with, as ``SessionService.open`` writes it) is looked
up by its fingerprint: a keyed hash (the hmac keyring) of the address's
network (/24 or /64, so a new address from the same provider is no news)
and the user agent's family (``bastion.http.useragent``). The table keeps
no address and no header: only that keyed hash.

- known: its ``last_seen`` moves on;
- unknown, and the account already has devices: recorded, NEW_DEVICE
  audited, and the owner mailed ("a new sign-in to your account": when,
  the approximate network, the browser, what to do);
- the account's first sign-in ever (or since this feature came): recorded
  without a mail, there is nothing to compare it with.

A fingerprint made under a retired hmac key still matches (each stored
one is checked under its own key id), so a key rotation does not make
every device new. Each account keeps at most ``MAX_DEVICES``; the least
recently seen goes first, so a stolen password tried from a thousand
networks cannot grow the table without bound.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update

from bastion.audit import EventTag, Origin, record_event
from bastion.clock import Clock
from bastion.db import Database
from bastion.db.database import Queries
from bastion.http.useragent import agent_family
from bastion.identity.service import IdentityService
from bastion.logging import get_logger
from bastion.mail import Mail, Postman
from bastion.monitor.models import KnownDevice
from bastion.monitor.signals import Signal
from bastion.network.blocks import InvalidNetwork, network_of
from bastion.security import Keyring, keyed_hash, keyed_hash_matches
from bastion.uow import open_unit_of_work

log = get_logger("bastion.monitor")

SIGN_IN_TAGS = frozenset({"auth:login"})
MAX_DEVICES = 50
_CONTEXT = "known_devices.fingerprint"
_PREFIX = {4: 24, 6: 64}


def approximate_network(address: str) -> str | None:
    """``198.51.100.0/24`` for ``198.51.100.7``; None if it is not an address."""
    try:
        first = network_of(address)
        return str(network_of(address, _PREFIX[first.version]))
    except InvalidNetwork:
        return None


class KnownDevices:
    def __init__(
        self, db: Database, clock: Clock, hmac: Keyring, postman: Postman, identity: IdentityService, *, service: str
    ) -> None:
        self.db = db
        self.clock = clock
        self.hmac = hmac
        self.postman = postman
        self.identity = identity
        self.service = service

    async def seen_by(self, db: Queries, user_id: uuid.UUID) -> list[dict[str, Any]]:
        """When ``user_id``'s known devices were first and last seen, oldest first (the privacy export).

        Without the fingerprint: a keyed hash tells its owner nothing, and
        the network and browser it stands for are not stored.
        """
        rows = await db.all(
            select(KnownDevice.first_seen, KnownDevice.last_seen)
            .where(KnownDevice.user_id == user_id)
            .order_by(KnownDevice.first_seen, KnownDevice.fingerprint)
        )
        return [{"first_seen": row.first_seen, "last_seen": row.last_seen} for row in rows]

    async def consume(self, signals: Sequence[Signal]) -> int:
        """Record the sign-ins among ``signals``; how many came from a new device. Never raises."""
        new = 0
        for signal in signals:
            if signal.tag not in SIGN_IN_TAGS or signal.outcome != "success" or signal.account_id is None:
                continue
            try:
                new += await self._seen(signal, signal.account_id)
            except Exception:
                log.exception("known device check failed", event_id=signal.event_id)
        return new

    def _device(self, signal: Signal) -> tuple[str, str]:
        """(network, agent family) of a sign-in; an unknown address is its own "unknown" network."""
        family = signal.details.get("agent") if isinstance(signal.details.get("agent"), str) else None
        network = approximate_network(signal.address) if signal.address else None
        return network or "unknown", (family or agent_family(signal.user_agent))[:32]

    async def _seen(self, signal: Signal, user_id: uuid.UUID) -> int:
        network, family = self._device(signal)
        value = f"{network}|{family}"
        at = signal.at
        origin = Origin(ip=signal.address, request_id="monitor:new-device", user_agent="bastion-monitor")
        async with open_unit_of_work(self.db, origin, self.postman.deliver) as uow:
            rows = await uow.db.all(
                select(KnownDevice.fingerprint, KnownDevice.last_seen).where(KnownDevice.user_id == user_id)
            )
            for row in rows:
                if keyed_hash_matches(self.hmac, value, _CONTEXT, row.fingerprint):
                    if row.last_seen < at:
                        await uow.db.execute(
                            update(KnownDevice)
                            .where(KnownDevice.user_id == user_id, KnownDevice.fingerprint == row.fingerprint)
                            .values(last_seen=at)
                        )
                    return 0
            user = await self.identity.by_id(uow.db, user_id)
            if user is None:
                return 0
            await uow.db.execute(
                insert(KnownDevice),
                {"user_id": user_id, "fingerprint": keyed_hash(self.hmac, value, _CONTEXT), "first_seen": at,
                 "last_seen": at},
            )  # fmt: skip
            if len(rows) >= MAX_DEVICES:
                oldest = sorted(rows, key=lambda row: row.last_seen)[: len(rows) - MAX_DEVICES + 1]
                await uow.db.execute(
                    delete(KnownDevice).where(
                        KnownDevice.user_id == user_id,
                        KnownDevice.fingerprint.in_([row.fingerprint for row in oldest]),
                    )
                )
            if not rows:
                return 0  # the first sign-in: nothing to compare it with
            record_event(
                uow.db, self.clock, EventTag.NEW_DEVICE, origin=uow.origin, subject_id=user_id,
                details={"network": network, "agent": family, "event_id": signal.event_id},
            )  # fmt: skip
            if not user.disabled:
                uow.outbox.append(self._notice(user.email, network, family, at))
            return 1

    def _notice(self, to: str, network: str, family: str, at: dt.datetime) -> Mail:
        service = self.service
        return Mail(
            to=to,
            subject=f"A new sign-in to your {service} account",
            text=(
                f"Your {service} account was just signed in to from a device or network it has not used before:\n\n"
                f"    When:    {at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC\n"
                f"    Network: {network} (approximate)\n"
                f"    Browser: {family}\n\n"
                "If this was you, there is nothing to do.\n\n"
                "If it was not you, someone knows your password: reset it now, sign out of your other "
                "sessions, turn on two-factor authentication, and tell the administrator of "
                f"{service}.\n"
            ),
        )
