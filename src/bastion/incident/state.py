"""Lockdown: one row every process reads, cached for at most ``incident.state_refresh`` seconds.

Invariants:

- Every process and instance sharing the database sees a change of the row
  within ``state_refresh`` (≤ 1 s) of its commit: the cache is a time-bounded
  copy of one primary-key read, never a value that waits for an event.
- The process that changes the row sees it at once (``set_lockdown`` drops
  the local copy once the change has committed; ``forget`` is public for that).
- While the row cannot be read (the database is down), the last value read
  stays in force: the request that needed it fails on the database anyway,
  and a reader that guessed "off" would open the doors during an incident.
- During lockdown a sign-in (a password or MFA step that would open a
  session, a refresh, an OAuth grant for a user, a provider sign-in) is
  admitted only for an administrator, one holding a role that grants every
  permission (``*``), whose sign-in included a second factor.

This module sits below the domains (sessions, identity, oauth): it reads the
roles through plain table clauses, not through ``bastion.access``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import JSON, String, Uuid, bindparam, column, select, table, update

from bastion.db.database import DatabaseUnavailable, Queries, Transaction
from bastion.http.problems import LockdownActive
from bastion.incident.models import IncidentState
from bastion.logging import get_logger

log = get_logger("bastion.incident")

LOCKDOWN = "lockdown"
# Every permission: what makes a role an administrator's (bastion.access.permissions.ALL).
ALL_PERMISSIONS = "*"

_READ = select(IncidentState.on, IncidentState.reason, IncidentState.since, IncidentState.by).where(
    IncidentState.name == LOCKDOWN
)
_SET = (
    update(IncidentState)
    .where(IncidentState.name == LOCKDOWN)
    .values(on=bindparam("on"), reason=bindparam("reason"), since=bindparam("since"), by=bindparam("by"))
)
# bastion.access's tables, named here without importing the layer above.
_user_roles = table("user_roles", column("user_id", Uuid), column("role", String))
_roles = table("roles", column("name", String), column("permissions", JSON))
_PERMISSIONS_OF = (
    select(_roles.c.permissions)
    .select_from(_user_roles.join(_roles, _roles.c.name == _user_roles.c.role))
    .where(_user_roles.c.user_id == bindparam("user_id"))
)


@dataclass(frozen=True)
class LockdownState:
    on: bool
    reason: str | None = None
    since: dt.datetime | None = None
    by: str | None = None


OFF = LockdownState(on=False)


class Lockdown:
    """The per-process reader of the lockdown row.

    ``current()`` costs nothing between refreshes; a refresh is one
    primary-key read, and concurrent callers share one (no stampede).
    ``monotonic`` is injectable so tests can move the cache's time.
    """

    def __init__(
        self,
        db: Queries,
        *,
        refresh: float,
        allows_reads: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.refresh = refresh
        self.allows_reads = allows_reads
        self.monotonic = monotonic
        self._state = OFF
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def current(self, db: Queries | None = None) -> LockdownState:
        """The cached state; a refresh reads through ``db`` when given (the
        caller's own transaction: one holding row locks must not wait for a
        second connection that the transactions it blocks may hold)."""
        if self._fresh():
            return self._state
        async with self._lock:
            if not self._fresh():  # another caller may have refreshed while we waited
                await self._read(db or self.db)
        return self._state

    async def is_on(self, db: Queries | None = None) -> bool:
        return (await self.current(db)).on

    def forget(self) -> None:
        """Read the row again at the next ``current()`` (after this process changed it)."""
        self._read_at = None

    def _fresh(self) -> bool:
        return self._read_at is not None and self.monotonic() - self._read_at < self.refresh

    async def _read(self, db: Queries) -> None:
        try:
            row = await db.one(_READ)
        except DatabaseUnavailable:  # the database is down: keep the last known state (module docstring)
            log.warning("lockdown state unreadable; keeping the last value", on=self._state.on)
            return
        self._state = OFF if row is None else LockdownState(bool(row.on), row.reason, row.since, row.by)
        self._read_at = self.monotonic()

    async def admit_sign_in(self, db: Queries, user_id: uuid.UUID | None, *, mfa: bool) -> None:
        """Refuse a sign-in during lockdown (``LockdownActive``) unless ``user_id`` is an admin with ``mfa``."""
        if not await self.is_on(db):
            return
        if user_id is not None and mfa and await is_admin(db, user_id):
            return
        log.warning("sign-in refused: lockdown", user_id=str(user_id) if user_id else None, mfa=mfa)
        raise LockdownActive


async def is_admin(db: Queries, user_id: uuid.UUID) -> bool:
    """Whether ``user_id`` holds a role granting every permission."""
    for permissions in await db.all(_PERMISSIONS_OF, {"user_id": user_id}):
        if ALL_PERMISSIONS in (permissions[0] or []):
            return True
    return False


async def read_lockdown(db: Queries) -> LockdownState:
    """The row as it is now, uncached (the command line)."""
    row = await db.one(_READ)
    return OFF if row is None else LockdownState(bool(row.on), row.reason, row.since, row.by)


async def set_lockdown(tx: Transaction, *, on: bool, reason: str | None, by: str, now: dt.datetime) -> LockdownState:
    """Turn lockdown on or off in ``tx``; the caller records the audit event in the same transaction.

    The row is seeded by migration 0008; turning it on again replaces the reason.
    """
    state = LockdownState(on=on, reason=reason if on else None, since=now, by=by)
    await tx.execute(_SET, {"on": state.on, "reason": state.reason, "since": state.since, "by": state.by})
    return state
