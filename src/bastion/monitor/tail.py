"""The tail: audit events read back as they commit, turned into ``Signal``s.

Event ids are handed out as rows are inserted, but transactions commit in
any order: when ids 7 and 9 are read, 8 may still be on its way. The tail
remembers such gaps and asks for them again with the next reads, for
``GAP_GRACE`` seconds (a transaction that takes longer than that to commit
has its event missed by detection, never by the audit log itself), and for
at most ``MAX_GAPS`` ids at once.

The holder notes its position in the lease row (``MonitorService``, at
most once a second, and when it stops). A process that takes the tail over (the lease
"monitor-tail") resumes from the noted position, so the events committed
while no process held the lease are judged too (those judged in the last
second before a holder died, once more); from the newest event when
nothing was noted or the noted position is more than ``RESUME_LIMIT``
events behind (history that old is the audit log's, not detection's).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from bastion.access.models import UserRole
from bastion.audit import events_after, last_event_id
from bastion.db import Database
from bastion.monitor.signals import Signal

__all__ = ["GAP_GRACE", "RESUME_LIMIT", "Tail", "signal_of"]

GAP_GRACE = 5.0
MAX_GAPS = 1000
BATCH = 1000
RESUME_LIMIT = 10_000


def signal_of(row: Any, *, admins: frozenset[uuid.UUID] = frozenset()) -> Signal:
    """The signal of one event row (``events_after``'s columns)."""
    details = dict(row.details or {})
    account = row.subject_id or row.actor_id
    if row.tag == "auth:login" and row.outcome == "success" and account in admins:
        details["admin"] = True
    api_key = details.get("api_key_id") or details.get("key_id")
    # Events keep no user agent of their own; a sign-in event may carry one in its details.
    agent = details.get("user_agent")
    return Signal(
        at=row.at,
        tag=row.tag,
        outcome=row.outcome,
        account_id=account,
        login=details.get("login") if isinstance(details.get("login"), str) else None,
        address=row.ip,
        principal=f"user:{row.actor_id}" if row.actor_id else None,
        api_key=api_key if isinstance(api_key, str) else None,
        user_agent=agent[:256] if isinstance(agent, str) else None,
        event_id=row.id,
        details=details,
    )


class Tail:
    def __init__(self, db: Database, *, admin_roles: Iterable[str] = ("admin",), batch: int = BATCH) -> None:
        self.db = db
        self.batch = batch
        self.admin_roles = tuple(admin_roles)
        self.position: int | None = None
        # id → when it was first missed (monotonic seconds).
        self._gaps: dict[int, float] = {}

    async def start_at_end(self) -> None:
        await self.resume(None)

    async def resume(self, noted: int | None) -> int:
        """Start after ``noted`` (where the previous holder got to), or at the newest event when
        nothing was noted or it is further behind than ``RESUME_LIMIT``; how many events were
        skipped that way (0 when the tail resumes, or nothing was noted)."""
        newest = await last_event_id(self.db)
        self._gaps.clear()
        if noted is not None and 0 <= newest - noted <= RESUME_LIMIT:
            self.position = noted
            return 0
        self.position = newest
        return 0 if noted is None else max(newest - noted, 0)

    def forget(self) -> None:
        """Lost the lease: the next holder judges what follows."""
        self.position = None
        self._gaps.clear()

    async def read(self) -> list[Signal]:
        """The signals of the events committed since the last read (oldest first)."""
        if self.position is None:
            self.position = await last_event_id(self.db)
        now = time.monotonic()
        for missed in [i for i, since in self._gaps.items() if now - since > GAP_GRACE]:
            del self._gaps[missed]
        rows = await events_after(self.db, self.position, self.batch, also=sorted(self._gaps))
        fresh = []
        for row in rows:
            if row.id in self._gaps:
                del self._gaps[row.id]
            elif row.id > self.position:
                for missing in range(self.position + 1, min(row.id, self.position + 1 + MAX_GAPS)):
                    if len(self._gaps) < MAX_GAPS:
                        self._gaps[missing] = now
                self.position = row.id
            else:
                continue
            fresh.append(row)
        admins = await self._admins(fresh)
        return [signal_of(row, admins=admins) for row in fresh]

    async def _admins(self, rows: list[Any]) -> frozenset[uuid.UUID]:
        """Which of the accounts signing in hold an admin role (the "admin-sign-in" rule)."""
        accounts = {
            row.subject_id or row.actor_id
            for row in rows
            if row.tag == "auth:login" and row.outcome == "success" and (row.subject_id or row.actor_id)
        }
        if not accounts:
            return frozenset()
        found = await self.db.all(
            sa.select(UserRole.user_id).where(UserRole.user_id.in_(accounts), UserRole.role.in_(self.admin_roles))
        )
        return frozenset(row.user_id for row in found)
