"""Automatic responses: what a detection rule does when it fires, and the
audited block changes an operator makes.

``Responder.act(fired)`` runs the rule's actions (``RuleSettings.actions``)
against the signal that crossed the threshold:

- ``block_address``: the signal's address (/32 or /128) for ``block_for``;
- ``block_network``: its /24 or /64, only when ``monitor.auto_block_networks``;
- ``lock_account``: identity's lock (the account is disabled), its sessions and
  OAuth grants revoked;
- ``revoke_sessions``: the account's sessions and OAuth grants;
- ``require_step_up``: for 24 hours a password alone does not sign it in
  (TOTP, or a code mailed to the address);
- ``require_password_reset``: its next sign-in must choose a new password;
- ``mail_user``: a notice to the account's owner.

Each action is its own transaction, audited with the rule's name, so one
that fails (logged) neither undoes nor stops the others; ``act`` never
raises. What the defaults may do is the rules' business (bastion.monitor
rules: alert and step up, never lock); what this module enforces whatever
the rules say is the bound on automatic blocks: at most
``monitor.max_auto_blocks`` in force (also when several processes block at
once: ``_one_block_writer``), single addresses unless networks are
allowed, never a trusted proxy's address (that would block everyone behind
it), always for a bounded time.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from ipaddress import ip_address

from sqlalchemy import delete, func, select

from bastion.audit import EventTag, Origin, Outcome, record_event
from bastion.clock import Clock
from bastion.db import Database
from bastion.identity.models import Account
from bastion.identity.service import IdentityService
from bastion.logging import get_logger
from bastion.mail import Mail, Postman
from bastion.monitor.signals import Fired
from bastion.network.blocks import AUTO, MANUAL, BlockInfo, BlockList, InvalidNetwork, network_of
from bastion.network.ipfilter import Network
from bastion.network.models import Block
from bastion.oauth.token import revoke_grants
from bastion.sessions.service import SessionService
from bastion.settings import Settings
from bastion.uow import UnitOfWork, open_unit_of_work

log = get_logger("bastion.monitor")

STEP_UP_FOR = dt.timedelta(hours=24)
# The prefixes block_network covers (IPv6: one site's /64, as the rate limiter counts).
NETWORK_PREFIX = {4: 24, 6: 64}
# How long an automatic block may last at most, whatever a rule says.
MAX_AUTO_BLOCK = 7 * 86400.0


async def add_block(
    uow: UnitOfWork,
    blocks: BlockList,
    clock: Clock,
    network: Network,
    *,
    for_seconds: float | None,
    reason: str,
    source: str = MANUAL,
    rule: str | None = None,
    by: str | None = None,
    actor_id: uuid.UUID | None = None,
) -> BlockInfo:
    """Block ``network`` and record BLOCK_ADD in the same transaction."""
    block = await blocks.add(uow.db, network, for_seconds=for_seconds, reason=reason, source=source, rule=rule, by=by)
    record_event(
        uow.db, clock, EventTag.BLOCK_ADD, origin=uow.origin, actor_id=actor_id,
        details={
            "block_id": str(block.id), "network": block.network, "source": source, "rule": rule,
            "expires_at": block.expires_at.isoformat() if block.expires_at else None,
        },
    )  # fmt: skip
    return block


async def remove_block(
    uow: UnitOfWork,
    blocks: BlockList,
    clock: Clock,
    target: uuid.UUID | Network,
    *,
    actor_id: uuid.UUID | None = None,
) -> list[BlockInfo]:
    """Remove a block (by id) or every block of a network, recording one BLOCK_REMOVE per block removed."""
    removed = await blocks.remove(uow.db, target)
    for block in removed:
        record_event(
            uow.db, clock, EventTag.BLOCK_REMOVE, origin=uow.origin, actor_id=actor_id,
            details={"block_id": str(block.id), "network": block.network, "source": block.source},
        )  # fmt: skip
    return removed


# pg_advisory_xact_lock key of automatic blocks (any fixed 64-bit number; this spells "autoblok").
_BLOCK_LOCK = 0x6175746F626C6F6B


async def _one_block_writer(uow: UnitOfWork, now: dt.datetime) -> None:
    """Make the count of live blocks and the insert that follows it one step cluster-wide.

    Counting and then inserting would let racing processes (HTTP signals are
    judged in every worker) each see room under ``monitor.max_auto_blocks``
    and all insert. So before counting: on PostgreSQL a transaction-scoped
    advisory lock (released at commit or rollback, so a pooled connection
    never keeps it); on SQLite a write (expired blocks purged, as
    ``BlockList.add`` would), which takes the one writer before the count
    is read, so the count is read under the write lock.
    """
    if uow.db.dialect.name == "postgresql":
        await uow.db.value(select(func.pg_advisory_xact_lock(_BLOCK_LOCK)))
        return
    await uow.db.execute(delete(Block).where(Block.expires_at <= now))


class Responder:
    """Runs a fired rule's actions (``act``); the alert itself is the alert store's."""

    def __init__(
        self,
        *,
        settings: Settings,
        clock: Clock,
        db: Database,
        postman: Postman,
        identity: IdentityService,
        sessions: SessionService,
        blocks: BlockList,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.db = db
        self.postman = postman
        self.identity = identity
        self.sessions = sessions
        self.blocks = blocks
        self._on_account: dict[str, Callable[[UnitOfWork, Account, str], Awaitable[bool]]] = {
            "lock_account": self._lock,
            "revoke_sessions": self._revoke_all,
            "require_step_up": self._step_up,
            "require_password_reset": self._reset,
            "mail_user": self._mail,
        }

    async def act(self, fired: Fired) -> list[str]:
        """Run ``fired.actions``; the names of those that changed something. Never raises."""
        taken = []
        for action in dict.fromkeys(fired.actions):
            if action == "alert":
                continue  # the alert store's and the delivery's
            try:
                async with open_unit_of_work(self.db, self._origin(fired), self.postman.deliver) as uow:
                    done = await self._run(uow, action, fired)
            except Exception:
                log.exception("automatic response failed", rule=fired.rule, action=action)
                continue
            if done:
                taken.append(action)
        if {"block_address", "block_network"} & set(taken):
            # This process refuses the address at once; the others within incident.state_refresh.
            self.blocks.forget()
        return taken

    def _origin(self, fired: Fired) -> Origin:
        return Origin(ip=None, request_id=f"monitor:{fired.rule}"[:64], user_agent="bastion-monitor")

    async def _run(self, uow: UnitOfWork, action: str, fired: Fired) -> bool:
        if action == "block_address":
            return await self._block(uow, fired, prefix=None)
        if action == "block_network":
            if not self.settings.monitor.auto_block_networks:
                log.info("network block not allowed (monitor.auto_block_networks)", rule=fired.rule)
                return False
            return await self._block(uow, fired, prefix=NETWORK_PREFIX)
        on_account = self._on_account.get(action)
        if on_account is None:
            log.warning("unknown rule action", rule=fired.rule, action=action)
            return False
        user = await self._account(uow, fired)
        return False if user is None else await on_account(uow, user, f"rule:{fired.rule}")

    async def _lock(self, uow: UnitOfWork, user: Account, reason: str) -> bool:
        if not user.disabled:
            await self.identity.lock(uow, user)
        await self._revoke(uow, user, reason)
        return True

    async def _revoke_all(self, uow: UnitOfWork, user: Account, reason: str) -> bool:
        await self._revoke(uow, user, reason)
        return True

    async def _step_up(self, uow: UnitOfWork, user: Account, reason: str) -> bool:
        until = self.clock.now() + STEP_UP_FOR
        return await self.identity.require_step_up(uow, user, until=until, reason=reason) is not user

    async def _reset(self, uow: UnitOfWork, user: Account, reason: str) -> bool:
        return await self.identity.require_password_reset(uow, user, reason=reason) is not user

    async def _mail(self, uow: UnitOfWork, user: Account, reason: str) -> bool:
        uow.outbox.append(self._notice(user))
        return True

    async def _account(self, uow: UnitOfWork, fired: Fired) -> Account | None:
        account_id = fired.signal.account_id
        return None if account_id is None else await self.identity.by_id(uow.db, account_id)

    async def _revoke(self, uow: UnitOfWork, user: Account, reason: str) -> None:
        await self.sessions.revoke_all(uow, user.id, reason=reason[:64])
        grants = await revoke_grants(uow.db, user_id=user.id, reason=reason, now=self.clock.now())
        record_event(
            uow.db, self.clock, EventTag.OAUTH_GRANT_REVOKE, origin=uow.origin, subject_id=user.id,
            details={"reason": reason[:64], "count": grants},
        )  # fmt: skip

    async def _block(self, uow: UnitOfWork, fired: Fired, *, prefix: dict[int, int] | None) -> bool:
        address = fired.signal.address
        if not address:
            return False
        try:
            version = ip_address(address).version
            network = network_of(address, None if prefix is None else prefix[version])
        except (ValueError, InvalidNetwork):
            return False
        if self._shields(network):
            log.warning("automatic block of a trusted proxy refused", rule=fired.rule, network=str(network))
            return False
        await _one_block_writer(uow, self.clock.now())
        live = await self.blocks.live(uow.db)
        if any(block.network == str(network) for block in live):
            return False  # already blocked: one rule firing again adds nothing
        if sum(block.source == AUTO for block in live) >= self.settings.monitor.max_auto_blocks:
            log.warning("automatic block cap reached (monitor.max_auto_blocks)", rule=fired.rule)
            record_event(
                uow.db, self.clock, EventTag.BLOCK_ADD, origin=uow.origin, outcome=Outcome.DENIED,
                details={"network": str(network), "source": AUTO, "rule": fired.rule, "reason": "cap"},
            )  # fmt: skip
            return False
        await add_block(
            uow, self.blocks, self.clock, network,
            for_seconds=min(max(fired.block_for, 1.0), MAX_AUTO_BLOCK),
            reason=f"rule {fired.rule}: {fired.count} in {fired.window_seconds:g}s",
            source=AUTO, rule=fired.rule, by="bastion-monitor",
        )  # fmt: skip
        return True

    def _shields(self, network: Network) -> bool:
        """Whether ``network`` would cover a trusted proxy: every client behind it would be refused."""
        return any(
            network.version == proxy.version and network.overlaps(proxy)
            for proxy in self.settings.server.trusted_proxies
        )

    def _notice(self, user: Account) -> Mail:
        service = self.settings.auth.service_name
        return Mail(
            to=user.email,
            subject=f"Unusual activity on your {service} account",
            text=(
                f"{service} noticed unusual sign-in activity on your account "
                f"({self.clock.now():%Y-%m-%d %H:%M} UTC).\n\n"
                "If it was not you, change your password now and turn on two-factor authentication. "
                f"If you cannot sign in, contact the administrator of {service}.\n"
            ),
        )
