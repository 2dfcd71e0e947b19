"""``record_event``: the one way security events are written.

Each event carries its RFC 6962 leaf hash (``bastion.audit.entry``) and the
random salt of its personal fields; the sequencer (``bastion.audit.tree``)
later gives it its place in the tree.

The event joins the caller's transaction, so it is committed with the change
it describes or not at all: it is deferred (``Transaction.defer``) and the
events of one transaction are inserted in one statement as it commits; a
transaction that rolls back takes them along.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog

from bastion.audit.entry import leaf_of, personal_hash
from bastion.audit.events import EventTag, Outcome
from bastion.audit.models import AuditEvent
from bastion.clock import Clock
from bastion.db import Database, Transaction
from bastion.metrics import event_recorded
from bastion.security import token_bytes

# Every event is also a log line, so log monitoring sees what the table holds.
log = structlog.get_logger("bastion.audit")
_INSERT = sa.insert(AuditEvent)


@dataclass(frozen=True)
class Origin:
    """Where an event came from: the request, or the command line."""

    ip: str | None = None
    request_id: str | None = None
    user_agent: str | None = None
    # The verified client certificate of an admin-listener request (CN, hex
    # serial); recorded in the event's details as "client_cert".
    client_cert_cn: str | None = None
    client_cert_serial: str | None = None

    @classmethod
    def cli(cls) -> Origin:
        return cls(ip=None, request_id="cli", user_agent="bastion-cli")


def record_event(
    tx: Transaction,
    clock: Clock,
    tag: EventTag,
    *,
    origin: Origin,
    outcome: Outcome = Outcome.SUCCESS,
    actor_id: uuid.UUID | None = None,
    subject_id: uuid.UUID | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    if origin.client_cert_serial is not None:
        details = {**(details or {}), "client_cert": {"cn": origin.client_cert_cn, "serial": origin.client_cert_serial}}
    log.info(
        "audit",
        tag=tag.value,
        outcome=outcome.value,
        actor_id=str(actor_id) if actor_id else None,
        subject_id=str(subject_id) if subject_id else None,
        ip=origin.ip,
        details=details,
    )
    event_recorded(tag.value, outcome.value)
    at = clock.now()
    subject = subject_id if subject_id is not None else actor_id
    details = details or {}
    # The leaf is computed here, as the row is written, not by the sequencer:
    # what the tree commits to is what the writer meant, and a row changed
    # between its commit and its sequencing no longer matches its own leaf.
    salt = token_bytes(32)
    leaf = leaf_of(
        at, tag.value, outcome.value, origin.request_id, personal_hash(salt, actor_id, subject, origin.ip, details)
    )
    tx.defer(
        _INSERT,
        {
            "at": at,
            "tag": tag.value,
            "outcome": outcome.value,
            "actor_id": actor_id,
            "subject_id": subject,
            "ip": origin.ip,
            "request_id": origin.request_id,
            "details": details,
            "leaf_hash": leaf,
            "personal_salt": salt,
        },
    )


async def events_for(db: Database | Transaction, subject_id: uuid.UUID) -> list[Any]:
    """The events about ``subject_id``, oldest first (rows with AuditEvent's columns)."""
    return await db.all(sa.select(AuditEvent).where(AuditEvent.subject_id == subject_id).order_by(AuditEvent.id))


# What the monitor's tail reads of each event: not the tree's columns.
_TAIL_COLUMNS = (
    AuditEvent.id,
    AuditEvent.at,
    AuditEvent.tag,
    AuditEvent.outcome,
    AuditEvent.actor_id,
    AuditEvent.subject_id,
    AuditEvent.ip,
    AuditEvent.details,
)


async def events_after(db: Database | Transaction, after_id: int, limit: int, *, also: Sequence[int] = ()) -> list[Any]:
    """Events with ``id > after_id``, and those with an id in ``also``, oldest first, at most ``limit``.

    The monitor's tail (bastion.monitor.tail). Ids are handed out as rows are
    inserted, but transactions commit in any order, so an id below the last
    one read may still appear: the tail asks again for those (``also``).
    """
    where = AuditEvent.id > after_id
    if also:
        where = sa.or_(where, AuditEvent.id.in_(list(also)))
    return await db.all(sa.select(*_TAIL_COLUMNS).where(where).order_by(AuditEvent.id).limit(limit))


async def last_event_id(db: Database | Transaction) -> int:
    """The highest event id so far (0 for none): where a tail that starts "now" begins."""
    return int(await db.value(sa.select(sa.func.max(AuditEvent.id))) or 0)
