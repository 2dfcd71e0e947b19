"""Erasure and retention that leave the log verifiable.

- ``redact_events(tx, subject_id)`` pseudonymises every event naming a
  person (as actor or subject): the salt and the personal fields (actor,
  subject, address, details) are erased, and the event keeps only the
  salted hash those fields had (``details = {"personal": "<hex>"}``). The
  leaf, seq and seal are untouched: ``audit verify`` still recomputes the
  leaf from the time, tag, outcome, request id and that hash, and reports
  the event as redacted.
- ``purge_events_before(tx, when)`` empties sequenced events older than
  ``when`` (retention): only ``at``, the leaf hash, seq and seal stay; the
  tree and every checkpoint still verify, and the events are reported as
  purged. Unsequenced events are never purged: they are not in the tree yet.
"""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa

from bastion.audit.entry import row_personal
from bastion.audit.models import AuditEvent
from bastion.db import Transaction

PURGED = "purged"


def _now(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else dt.datetime.now(dt.UTC)


async def redact_events(
    tx: Transaction, subject_id: uuid.UUID, *, now: dt.datetime | None = None, pseudonym: str | None = None
) -> int:
    """Pseudonymise the events naming ``subject_id``; how many were redacted.

    ``pseudonym`` (an erasure's keyed pseudonym of the person, ``<kid>:<hex>``)
    is kept in each event's details beside the personal hash, so the events
    of one erased person can still be told apart from others' by whoever
    holds the keystore, and by nobody else. It is not part of the leaf.
    """
    rows = await tx.all(
        sa.select(AuditEvent).where(
            sa.or_(AuditEvent.subject_id == subject_id, AuditEvent.actor_id == subject_id),
            AuditEvent.redacted_at.is_(None),
            AuditEvent.purged_at.is_(None),
        )
    )
    changes = []
    for row in rows:
        personal = row_personal(row)
        details: dict[str, str] = {"personal": personal.hex()} if personal is not None else {}
        if pseudonym is not None:
            details["pseudonym"] = pseudonym
        changes.append({"_id": row.id, "_details": details})
    if changes:
        await tx.execute_many(
            sa.update(AuditEvent)
            # Still as read: a concurrent redaction or purge (an erasure and the retention
            # purge, two purges) may have emptied the row since, and redacting it again is
            # refused by the append-only trigger (migration 0008), failing the whole transaction.
            .where(
                AuditEvent.id == sa.bindparam("_id"), AuditEvent.redacted_at.is_(None), AuditEvent.purged_at.is_(None)
            )
            .values(
                actor_id=None,
                subject_id=None,
                ip=None,
                details=sa.bindparam("_details"),
                personal_salt=None,
                redacted_at=_now(now),
            ),
            changes,
        )
    return len(changes)


async def purge_events_before(tx: Transaction, when: dt.datetime, *, now: dt.datetime | None = None) -> int:
    """Empty the sequenced events older than ``when``; how many were purged."""
    return await tx.execute(
        sa.update(AuditEvent)
        .where(AuditEvent.at < when, AuditEvent.seq.is_not(None), AuditEvent.purged_at.is_(None))
        .values(
            tag=PURGED,
            outcome=PURGED,
            actor_id=None,
            subject_id=None,
            ip=None,
            request_id=None,
            details={},
            personal_salt=None,
            purged_at=_now(now),
        )
    )
