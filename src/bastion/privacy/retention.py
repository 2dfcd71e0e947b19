"""Retention: what is kept only for a while, purged once it is older than its
``[privacy]`` setting (docs/privacy.md).

- audit events older than ``audit_retention``: emptied by
  ``bastion.audit.purge_events_before`` (the leaf hash, seq and seal stay, so
  the tree and every checkpoint still verify; the events read as purged);
- sessions that ended (revoked or expired) more than ``session_retention``
  ago, with their refresh tokens;
- accounts that signed up themselves, never verified their address and never
  signed in, older than ``unverified_account_retention``: deleted, and the
  events naming them pseudonymised (``redact_events``) as erasure does. An
  account an operator or admin made (``bastion user create``, unverified
  until its owner sets a password) is never purged: there is no sign-up
  event for it;
- dev outbox mail (``.eml`` files) older than ``outbox_retention``.

Each run is one ``privacy:purge`` event with the counts; the last one's time
is how the scheduled job (a ``LeasedLoop``, once cluster-wide) knows when the
next run is due, so a restart does not purge again early. Every change is made
in short batches, each its own transaction: a first run on years of data
never holds the writer, or one statement, for long (each statement has a
budget of about a second).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog

from bastion.audit import EventTag, Origin, purge_events_before, record_event, redact_events
from bastion.audit.models import AuditEvent
from bastion.clock import Clock
from bastion.db import Database, transaction
from bastion.db.leases import LeasedLoop
from bastion.identity.models import User
from bastion.oauth.models import LinkedIdentity
from bastion.privacy.ledger import catch_up
from bastion.sessions.models import RefreshToken, Session
from bastion.settings import Settings

log = structlog.get_logger("bastion.privacy")

JOB = "privacy-retention"
# What the scheduled purge's event names as its origin (the CLI's is Origin.cli()).
SCHEDULED = Origin(ip=None, request_id=JOB, user_agent="bastion-serve")
# Rows changed per transaction: each batch is a short write, well inside a statement's budget.
BATCH = 2000
ACCOUNT_BATCH = 100
# How often the job looks whether a purge is due (the purge itself runs every retention_interval).
LOOK_EVERY = 300.0


@dataclass(frozen=True)
class Purged:
    """What one run purged (or, in a dry run, would purge)."""

    audit_events: int = 0
    sessions: int = 0
    unverified_accounts: int = 0
    outbox_mails: int = 0


@dataclass(frozen=True)
class Cutoffs:
    """Everything older than these goes."""

    audit: dt.datetime
    sessions: dt.datetime
    accounts: dt.datetime
    outbox: dt.datetime

    @classmethod
    def of(cls, settings: Settings, now: dt.datetime) -> Cutoffs:
        privacy = settings.privacy

        def ago(seconds: float) -> dt.datetime:
            return now - dt.timedelta(seconds=seconds)

        return cls(
            audit=ago(privacy.audit_retention),
            sessions=ago(privacy.session_retention),
            accounts=ago(privacy.unverified_account_retention),
            outbox=ago(privacy.outbox_retention),
        )


def _ended_sessions(cutoff: dt.datetime) -> sa.ColumnElement[bool]:
    return sa.or_(
        sa.and_(Session.revoked_at.is_not(None), Session.revoked_at < cutoff),
        Session.expires_at < cutoff,
    )


def _purgeable_events(cutoff: dt.datetime) -> sa.ColumnElement[bool]:
    # purge_events_before's own condition: only sequenced events are in the tree and may be emptied.
    return sa.and_(AuditEvent.at < cutoff, AuditEvent.seq.is_not(None), AuditEvent.purged_at.is_(None))


def _still_unused() -> tuple[sa.ColumnElement[bool], ...]:
    """Never verified, never signed in, nothing linked: checked again by the DELETE itself."""
    signed_in = sa.exists().where(Session.user_id == User.id)
    linked = sa.exists().where(LinkedIdentity.user_id == User.id)
    return (User.email_verified_at.is_(None), ~signed_in, ~linked)


def _stale_accounts(cutoff: dt.datetime) -> sa.Select[Any]:
    signed_up = sa.exists().where(AuditEvent.tag == EventTag.REGISTER.value, AuditEvent.actor_id == User.id)
    return (
        sa.select(User.id)
        .where(User.created_at < cutoff, signed_up, *_still_unused())
        .order_by(User.created_at, User.id)
    )


def _count(select: sa.Select[Any]) -> sa.Select[Any]:
    return sa.select(sa.func.count()).select_from(select.order_by(None).subquery())


def _mail_time(path: Path) -> dt.datetime:
    """When an outbox mail was written: its name's UTC time (OutboxMailer), else the file's mtime."""
    try:
        return dt.datetime.strptime(path.name.split("-", 1)[0], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)


def old_mails(outbox: Path, cutoff: dt.datetime) -> list[Path]:
    """The outbox's ``.eml`` files written before ``cutoff``."""
    if not outbox.is_dir():
        return []
    return sorted(path for path in outbox.glob("*.eml") if path.is_file() and _mail_time(path) < cutoff)


def _delete_files(paths: list[Path]) -> int:
    deleted = 0
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            continue  # deleted meanwhile (bastion mail, another purge): gone either way
        deleted += 1
    return deleted


class Retention:
    """Purges what ``[privacy]`` keeps only for a while; ``job()`` is its place in ``serve``."""

    def __init__(self, settings: Settings, db: Database, clock: Clock) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self._first_look: dt.datetime | None = None

    @property
    def outbox(self) -> Path:
        return self.settings.data_dir / "outbox"

    async def count(self) -> Purged:
        """What a purge now would purge (``--dry-run``): nothing changes, nothing is recorded."""
        cut = Cutoffs.of(self.settings, self.clock.now())
        count_where = sa.select(sa.func.count())
        return Purged(
            audit_events=int(await self.db.value(count_where.where(_purgeable_events(cut.audit))) or 0),
            sessions=int(
                await self.db.value(count_where.select_from(Session).where(_ended_sessions(cut.sessions))) or 0
            ),
            unverified_accounts=int(await self.db.value(_count(_stale_accounts(cut.accounts))) or 0),
            outbox_mails=len(await asyncio.to_thread(old_mails, self.outbox, cut.outbox)),
        )

    async def purge(self, *, origin: Origin) -> Purged:
        """Purge everything past its retention now; one ``privacy:purge`` event with the counts."""
        try:
            await catch_up(self.settings, self.db)  # the ledger lines erasures recorded, before their events go
        except OSError as exc:
            log.error("erasure ledger: appending the lines erasures recorded failed", error=type(exc).__name__)
        now = self.clock.now()
        cut = Cutoffs.of(self.settings, now)
        # Accounts before events: an account is found by its sign-up event, which the events' purge empties.
        accounts = await self._purge_accounts(cut.accounts, now)
        purged = Purged(
            audit_events=await self._purge_events(cut.audit, now),
            sessions=await self._purge_sessions(cut.sessions),
            unverified_accounts=accounts,
            outbox_mails=await asyncio.to_thread(lambda: _delete_files(old_mails(self.outbox, cut.outbox))),
        )
        async with transaction(self.db) as tx:
            record_event(tx, self.clock, EventTag.PRIVACY_PURGE, origin=origin, details=asdict(purged))
        log.info("retention purge", **asdict(purged))
        return purged

    async def _purge_events(self, cutoff: dt.datetime, now: dt.datetime) -> int:
        # Batches by time: the BATCH-th oldest candidate's time bounds each purge.
        boundary = (
            sa.select(AuditEvent.at).where(_purgeable_events(cutoff)).order_by(AuditEvent.at).offset(BATCH).limit(1)
        )
        total = 0
        while True:
            async with transaction(self.db) as tx:
                upto: dt.datetime | None = await tx.value(boundary)
                # More than BATCH events at one instant: no smaller cut exists, take them all.
                count = await purge_events_before(tx, upto or cutoff, now=now)
                if upto is not None and count == 0:
                    count = await purge_events_before(tx, cutoff, now=now)
                    upto = None
            total += count
            if upto is None:
                return total

    async def _purge_sessions(self, cutoff: dt.datetime) -> int:
        batch = sa.select(Session.id).where(_ended_sessions(cutoff)).limit(BATCH)
        total = 0
        while True:
            async with transaction(self.db) as tx:
                ids = [row.id for row in await tx.all(batch)]
                if not ids:
                    return total
                await tx.execute(sa.delete(RefreshToken).where(RefreshToken.session_id.in_(ids)))
                total += await tx.execute(sa.delete(Session).where(Session.id.in_(ids)))

    async def _purge_accounts(self, cutoff: dt.datetime, now: dt.datetime) -> int:
        batch = _stale_accounts(cutoff).limit(ACCOUNT_BATCH)
        total = 0
        while True:
            async with transaction(self.db) as tx:
                ids = [row.id for row in await tx.all(batch)]
                if not ids:
                    return total
                for user_id in ids:
                    # One by one, under the same conditions: an address verified (or a sign-in)
                    # committed since the select keeps its account, and its events unredacted.
                    if await tx.execute(sa.delete(User).where(User.id == user_id, *_still_unused())):
                        await redact_events(tx, user_id, now=now)
                        total += 1

    async def last_run(self) -> dt.datetime | None:
        """The time of the last purge (its event), anywhere in the cluster."""
        last: dt.datetime | None = await self.db.value(
            sa.select(sa.func.max(AuditEvent.at)).where(AuditEvent.tag == EventTag.PRIVACY_PURGE.value)
        )
        return last

    async def tick(self) -> None:
        """The scheduled job's tick: purge when ``retention_interval`` has passed since the last purge.

        An instance that has never purged counts from when this job first
        looked: a server that just started (or a test's app) does not delete
        anything in its first interval, which leaves an operator who set a
        retention wrongly an interval to notice (``bastion privacy purge
        --dry-run`` says what would go).
        """
        now, last = self.clock.now(), await self.last_run()
        if last is None:
            if self._first_look is None:
                self._first_look = now
            last = self._first_look
        if now - last >= dt.timedelta(seconds=self.settings.privacy.retention_interval):
            await self.purge(origin=SCHEDULED)

    def job(self) -> LeasedLoop:
        """The ``privacy-retention`` job of ``serve`` (once cluster-wide)."""
        return LeasedLoop(self.db, JOB, self.tick, interval=min(self.settings.privacy.retention_interval, LOOK_EVERY))
