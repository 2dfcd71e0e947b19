"""``record_event``: the one way security events are written.

The event joins the caller's transaction, so it is committed with the change
it describes or not at all: it is deferred (``Transaction.defer``) and the
events of one transaction are inserted in one statement as it commits; a
transaction that rolls back takes them along.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog

from bastion.audit.events import EventTag, Outcome
from bastion.audit.models import AuditEvent
from bastion.clock import Clock
from bastion.db import Database, Transaction

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
    tx.defer(
        _INSERT,
        {
            "at": clock.now(),
            "tag": tag.value,
            "outcome": outcome.value,
            "actor_id": actor_id,
            "subject_id": subject_id if subject_id is not None else actor_id,
            "ip": origin.ip,
            "request_id": origin.request_id,
            "details": details or {},
        },
    )


async def events_for(db: Database | Transaction, subject_id: uuid.UUID) -> list[Any]:
    """The events about ``subject_id``, oldest first (rows with AuditEvent's columns)."""
    return await db.all(sa.select(AuditEvent).where(AuditEvent.subject_id == subject_id).order_by(AuditEvent.id))
