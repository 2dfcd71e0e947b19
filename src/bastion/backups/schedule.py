"""The scheduled backups of ``serve``: one ``LeasedLoop`` named "backups".

Its tick decides what is due from the audit log, not from memory: the last
``backup:create`` (or ``backup:drill``) event, whatever its outcome and
whichever process or command wrote it, is the last run, and the run is due
once the cron schedule's next time after it has passed. So a server that was
down at 03:00 backs up as soon as it is back (as anacron does), a manual
``bastion backup create`` at 02:59 still leaves the 03:00 run due (cron's next
time after 02:59 is 03:00), and a failed run is retried at the next scheduled
time, not at every tick: its failure event is the last run. With no event at
all, the schedule counts from when this process first looked.

A backup is followed by a prune (retention across every destination). The
drill runs on ``drill_schedule``: a full restore with ``[backups]
drill_identity_file``, else signatures and hashes only.

The work itself (create, drill, prune) is given as callables that write their
own audit events (the same functions the command line runs). Backups can
take minutes, longer than a lease: while one runs, the loop renews the lease
(LeasedLoop renews it during a tick), so no other instance starts a second
backup meanwhile.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import structlog
from croniter import croniter

from bastion.audit import EventTag, Origin, Outcome, record_event
from bastion.audit.models import AuditEvent
from bastion.clock import Clock
from bastion.db import Database, Transaction, transaction
from bastion.db.leases import LeasedLoop
from bastion.settings import BackupSettings

if TYPE_CHECKING:
    from bastion.secrets import Keyrings
    from bastion.settings import Settings

__all__ = [
    "JOB_NAME",
    "BackupScheduler",
    "LastRun",
    "backup_loop",
    "last_run",
    "next_due",
    "scheduled_backups",
    "scheduled_work",
]

log = structlog.get_logger("bastion.backups")

JOB_NAME = "backups"
# How often the loop looks whether something is due (cron's resolution is a minute).
TICK_SECONDS = 60.0
# The lease: renewed every third of it, also while a backup runs.
LEASE_SECONDS = 120.0

Work = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class LastRun:
    """The newest audit event of one kind of backup work."""

    at: dt.datetime
    outcome: str
    details: dict[str, Any]


async def last_run(db: Database | Transaction, tag: EventTag, *, outcome: str | None = None) -> LastRun | None:
    """The newest ``tag`` event (of ``outcome`` when given), or None.

    ``bastion check`` reads the last good backup and drill with this
    (``outcome="success"``); the scheduler reads the last run of any outcome.
    """
    query = sa.select(AuditEvent.at, AuditEvent.outcome, AuditEvent.details).where(AuditEvent.tag == tag.value)
    if outcome is not None:
        query = query.where(AuditEvent.outcome == outcome)
    rows = await db.all(query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(1))
    if not rows:
        return None
    at, result, details = rows[0]
    return LastRun(at=at, outcome=result, details=dict(details or {}))


def next_due(schedule: str, after: dt.datetime) -> dt.datetime:
    """The first time of the cron ``schedule`` (UTC) strictly after ``after``."""
    base = after.astimezone(dt.UTC)
    return croniter(schedule, base).get_next(dt.datetime).astimezone(dt.UTC)  # type: ignore[no-any-return]


class BackupScheduler:
    """The tick of the "backups" loop: create (then prune) and drill when due."""

    def __init__(
        self,
        settings: BackupSettings,
        clock: Clock,
        db: Database,
        *,
        create: Work,
        prune: Work,
        drill: Work,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.db = db
        self._create = create
        self._prune = prune
        self._drill = drill
        # When this process first looked, per kind: the base without any event.
        self._first_look: dict[EventTag, dt.datetime] = {}
        # The last attempt made here: a run that failed before writing its event
        # is not retried before the next scheduled time.
        self._attempted: dict[EventTag, dt.datetime] = {}

    async def due(self, tag: EventTag, schedule: str) -> bool:
        """Whether the ``schedule``'s next time after the last run (see the module) has passed."""
        if not schedule:
            return False
        now = self.clock.now()
        last = await last_run(self.db, tag)
        runs = [t for t in (last.at if last else None, self._attempted.get(tag)) if t is not None]
        # Once there is a run, it is the base; before any, when this process first looked.
        base = max(runs) if runs else self._first_look.setdefault(tag, now)
        return next_due(schedule, base) <= now

    async def tick(self) -> None:
        # Prune only after a backup that succeeded: never thin out the old ones while new ones fail.
        due = await self.due(EventTag.BACKUP_CREATE, self.settings.schedule)
        if due and await self._run(EventTag.BACKUP_CREATE, self._create):
            await self._run(EventTag.BACKUP_PRUNE, self._prune)
        if await self.due(EventTag.BACKUP_DRILL, self.settings.drill_schedule):
            await self._run(EventTag.BACKUP_DRILL, self._drill)

    async def _run(self, tag: EventTag, work: Work) -> bool:
        """Run ``work`` (the loop keeps the lease alive meanwhile); whether it succeeded (its own events say how)."""
        self._attempted[tag] = self.clock.now()
        try:
            await work()
        except Exception as exc:  # noqa: BLE001 - the work wrote its failure event; the loop goes on
            log.error("scheduled backup work failed", work=tag.value, error=type(exc).__name__, reason=str(exc))
            return False
        return True


def backup_loop(
    settings: BackupSettings, clock: Clock, db: Database, *, create: Work, prune: Work, drill: Work
) -> LeasedLoop:
    """The "backups" job for ``Services.jobs`` (runtime adds it only when recipients are set)."""
    scheduler = BackupScheduler(settings, clock, db, create=create, prune=prune, drill=drill)
    return LeasedLoop(db, JOB_NAME, scheduler.tick, interval=TICK_SECONDS, lease_seconds=LEASE_SECONDS)


# --- the work, as serve runs it --------------------------------------------------

# Who the scheduled runs' events say did them.
SCHEDULER_ORIGIN = Origin(request_id="scheduled", user_agent="bastion-serve")


def scheduled_backups(settings: Settings, clock: Clock, db: Database, keys: Keyrings) -> LeasedLoop:
    """The "backups" job of ``serve`` (runtime adds it to ``Services.jobs`` when recipients are set)."""
    scheduler = scheduled_work(settings, clock, db, keys)
    return LeasedLoop(db, JOB_NAME, scheduler.tick, interval=TICK_SECONDS, lease_seconds=LEASE_SECONDS)


def scheduled_work(settings: Settings, clock: Clock, db: Database, keys: Keyrings) -> BackupScheduler:
    """The scheduler of serve's backups: the same create, prune and drill as the command line's.

    The drill is full when ``[backups] drill_identity_file`` is set (read at
    each drill, so a rotated secret is picked up; unreadable, the drill fails
    and alerts), else signatures and hashes only.
    """
    from bastion.backups.create import create_backup, trusted_vkeys
    from bastion.backups.destinations import destinations_of
    from bastion.backups.drill import drill
    from bastion.backups.prune import prune
    from bastion.backups.snapshot import database_kind

    async def create() -> None:
        try:
            created = await create_backup(settings, keys, now=clock.now)
        except Exception as exc:
            await _record(db, clock, EventTag.BACKUP_CREATE, Outcome.FAILURE, {"reason": str(exc)[:500]})
            raise
        details = {
            "id": created.manifest.id,
            "name": created.manifest.name,
            "seconds": round(created.seconds, 3),
            "size": created.size,
            "destinations": list(created.copies),
        }
        await _record(db, clock, EventTag.BACKUP_CREATE, Outcome.SUCCESS, details)

    async def prune_all() -> None:
        await prune(settings.backups, clock, db, destinations_of(settings), origin=SCHEDULER_ORIGIN)

    async def drill_newest() -> None:
        identity: str | None = None
        if settings.backups.drill_identity_file is not None:
            try:
                identity = await asyncio.to_thread(settings.backups.drill_identity_file.read_text, "utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = f"{settings.backups.drill_identity_file}: cannot be read ({exc})"
                await _record(db, clock, EventTag.BACKUP_DRILL, Outcome.FAILURE, {"full": True, "reason": reason})
                raise
        url = settings.sqlalchemy_url
        await drill(
            clock=clock,
            db=db,
            destinations=destinations_of(settings),
            vkeys=trusted_vkeys(settings, keys),
            identity_text=identity,
            postgres_url=url if database_kind(url) == "postgresql" else None,
            origin=SCHEDULER_ORIGIN,
        )

    return BackupScheduler(settings.backups, clock, db, create=create, prune=prune_all, drill=drill_newest)


async def _record(db: Database, clock: Clock, tag: EventTag, outcome: Outcome, details: dict[str, Any]) -> None:
    async with transaction(db) as tx:
        record_event(tx, clock, tag, origin=SCHEDULER_ORIGIN, outcome=outcome, details=details)
