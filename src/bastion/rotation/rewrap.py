"""The background rewrap after an encryption rotation: resumable, a slice per tick.

After the encryption keyring rotates (on schedule or by `bastion keys
rotate encryption`), every sealed value is moved to the new key by
``bastion.rewrap.rewrap_database``, the same walk as `bastion keys rewrap`.
Here it runs inside the rotation job, in slices of at most ``budget``
seconds: a slice stops after a committed batch, and the next tick walks
again, skipping what is already under the active key (every value carries
its kid), so an interrupted rewrap, by a slice's end, a crash or another
instance taking the lease over, resumes where it stopped and nothing is
done twice. A slice must stay well inside the job's lease (the lease is
renewed between ticks, not during one).

Pending or done is read from the audit log: the rewrap of key K is done
once a ``KEYS_REWRAP`` event names K (``details.kid``); that one event is
written at the end of a complete walk.
A keyring with a single key has nothing to move.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
import structlog

from bastion.audit import EventTag, Origin, Outcome, record_event
from bastion.audit.models import AuditEvent
from bastion.clock import Clock
from bastion.db import Database, transaction
from bastion.network.ca import SealedKeyFile
from bastion.rewrap import rewrap_database
from bastion.secrets import Keyrings

log = structlog.get_logger("bastion.rotation")
ORIGIN = Origin(request_id="rotation", user_agent="bastion-rotation")
# Recent rewrap events looked at to find the active kid's (one per rotation).
_RECENT = 20


class _SliceOver(Exception):
    """The slice's time is up; raised from the progress callback after a committed batch."""


@dataclass
class RewrapProgress:
    """The rewrap of one kid in this process: how many slices it took so far."""

    kid: str
    slices: int = 0


async def rewrap_pending(db: Database, rings: Keyrings) -> str | None:
    """The active encryption kid if its rewrap is not finished, else None."""
    keyring = rings.encryption
    active = keyring.active_kid
    if len(keyring.kids()) < 2:
        return None
    rows = await db.all(
        sa.select(AuditEvent.details)
        .where(AuditEvent.tag == EventTag.KEYS_REWRAP.value, AuditEvent.outcome == Outcome.SUCCESS.value)
        .order_by(AuditEvent.id.desc())
        .limit(_RECENT)
    )
    done = any(isinstance(row.details, dict) and row.details.get("kid") == active for row in rows)
    return None if done else active


async def rewrap_slice(
    db: Database,
    rings: Keyrings,
    clock: Clock,
    progress: RewrapProgress,
    *,
    budget: float,
    batch_size: int = 500,
    files: tuple[SealedKeyFile, ...] = (),
) -> bool:
    """Rewrap for at most ``budget`` seconds (plus one batch); True once the rewrap is complete.

    On completion the one ``KEYS_REWRAP`` event is recorded (scheduled, with
    the kid and the counts of every slice), which marks the kid as done.
    """
    deadline = time.monotonic() + budget
    last_log = 0.0
    walked = False  # a slice always walks one batch at least, so every slice moves on

    def report(place: str, done: int, total: int) -> None:
        nonlocal last_log, walked
        now = time.monotonic()
        walked = walked or done > 0
        if now - last_log >= 5 or done == total:
            last_log = now
            log.info("rewrap progress", kid=progress.kid, place=place, done=done, total=total)
        if walked and now >= deadline:
            raise _SliceOver

    progress.slices += 1
    try:
        result = await rewrap_database(db, rings, batch_size=batch_size, report=report, files=files)
    except _SliceOver:
        # What the walk rewrapped before stopping is committed; the next slice skips it.
        return False
    async with transaction(db) as tx:
        record_event(
            tx,
            clock,
            EventTag.KEYS_REWRAP,
            origin=ORIGIN,
            outcome=Outcome.SUCCESS,
            details={
                "kid": progress.kid,
                # Moved by the completing walk (earlier slices' moves are in the log lines).
                "rewrapped": result.rewrapped,
                "corrupt": result.corrupt,
                "slices": progress.slices,
                "scheduled": True,
            },
        )
    log.info(
        "rewrap done", kid=progress.kid, rewrapped=result.rewrapped, corrupt=result.corrupt, slices=progress.slices
    )
    return True
