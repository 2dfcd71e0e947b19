"""The scheduled verification of ``serve``: ``bastion audit verify``'s check of
the whole log (``bastion.audit.verify.verify_log``) against the database's
checkpoints and the shipped files in ``[audit] checkpoint_dir``, every
``[audit] verify_interval``, once cluster-wide (the ``audit-verify`` lease).

Each run records the same ``audit:verify`` event as the command, so the
monitor's ``audit-verify-failed`` rule alerts on tampering found without an
operator running anything, and ``bastion check`` sees a recent verification.
The last such event anywhere in the cluster (the command's too) is when the
next run is due: a restart does not verify again early, and an instance that
has never verified counts from when this job first looked, as retention does.

**Off the event loop.** A verification reads every event (about 1.7 s of
work per 100,000, hashing each leaf and checking each seal) and SQLite's
reads run on the calling thread (``bastion.db.sqlite``). So it runs on a
thread of its own, with its own event loop and its own connection to the
database: the serving loop only waits for the answer and records it. It is
a full verification each time: nothing shorter would catch a row altered
before the last run. When serve stops (the task is cancelled), the thread
stops too, at its next page of events.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import sqlalchemy as sa
import structlog

from bastion.audit.events import EventTag
from bastion.audit.models import AuditEvent
from bastion.audit.notary import Notary
from bastion.audit.service import Origin, record_event
from bastion.audit.verify import Report, verdict, verify_log
from bastion.clock import Clock
from bastion.db import Database, open_database, transaction
from bastion.db.leases import LeasedLoop
from bastion.security.keys import Keyring
from bastion.settings import Settings

log = structlog.get_logger("bastion.audit")

JOB = "audit-verify"
# What the scheduled verification's event names as its origin (the command's is Origin.cli()).
SCHEDULED = Origin(ip=None, request_id=JOB, user_agent="bastion-serve")
# How often the job looks whether a verification is due.
LOOK_EVERY = 300.0


class _Stopped(Exception):
    """The verification's thread was told to stop (serve is stopping)."""


class ScheduledVerify:
    """``tick`` verifies the log when ``[audit] verify_interval`` has passed since the last verification."""

    def __init__(
        self, settings: Settings, db: Database, clock: Clock, hmac_ring: Keyring, notary: Notary, *, origin: str
    ) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.hmac_ring = hmac_ring
        self.notary = notary
        self.origin = origin
        self._first_look: dt.datetime | None = None
        # When the next run is due, as last read: the job looks at the log only from then on.
        self._due: dt.datetime | None = None

    async def last_run(self) -> dt.datetime | None:
        """The time of the last verification (its event, whatever its outcome), anywhere in the cluster."""
        last: dt.datetime | None = await self.db.value(
            sa.select(sa.func.max(AuditEvent.at)).where(AuditEvent.tag == EventTag.AUDIT_VERIFY.value)
        )
        return last

    async def tick(self) -> None:
        now = self.clock.now()
        if self._due is not None and now < self._due:
            return
        last = await self.last_run()
        if last is None:
            if self._first_look is None:
                self._first_look = now
            last = self._first_look
        self._due = last + dt.timedelta(seconds=self.settings.audit.verify_interval)
        if now >= self._due:
            await self.verify_now()
            self._due = None

    async def verify_now(self) -> Report:
        """Verify the whole log on a thread of its own and record the verdict (an ``audit:verify`` event)."""
        now, stopping = self.clock.now(), threading.Event()
        # The notary's keys as they are now: a checkpoint signed under a key rotated in since
        # serve started verifies too (the ring is looked up at each use, not at build time).
        vkeys = self.notary.vkeys()
        try:
            report = await asyncio.to_thread(lambda: asyncio.run(self._verify(now, vkeys, stopping)))
        except asyncio.CancelledError:
            stopping.set()  # a thread cannot be cancelled: it stops at its next page
            raise
        outcome, details = verdict(report)
        async with transaction(self.db) as tx:
            record_event(tx, self.clock, EventTag.AUDIT_VERIFY, origin=SCHEDULED, outcome=outcome, details=details)
        if report.intact:
            log.info("audit log verified intact", events=report.events, size=report.size)
        else:
            log.error(
                "audit log verification found tampering",
                findings=len(report.findings),
                first_bad_event=details.get("first_bad_event"),
            )
        return report

    async def _verify(self, now: dt.datetime, vkeys: list[str], stopping: threading.Event) -> Report:
        """On the verification's own thread and loop: its own database connection."""

        def progress(done: int, total: int) -> None:
            if stopping.is_set():
                raise _Stopped

        db = open_database(self.settings.sqlalchemy_url)
        checkpoint_dir = self.settings.audit.checkpoint_dir
        try:
            return await verify_log(
                db,
                self.hmac_ring,
                vkeys,
                origin=self.origin,
                now=now,
                directories=[checkpoint_dir] if checkpoint_dir is not None else [],
                progress=progress,
            )
        finally:
            await db.close()

    def job(self) -> LeasedLoop:
        """The ``audit-verify`` job of ``serve`` (once cluster-wide). A verification may
        take minutes on a large log: stopping serve waits for it (up to the loop's stop_timeout),
        then cancels it."""
        return LeasedLoop(self.db, JOB, self.tick, interval=min(self.settings.audit.verify_interval, LOOK_EVERY))
