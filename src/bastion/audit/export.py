"""``bastion audit export``: a bundle of events with their inclusion proofs
against one signed checkpoint, verifiable off the box with the notary's
public key alone (the format is in docs/audit.md).

The incident toolkit's forensic bundle embeds the same bundle
(``export_bundle``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from bastion.audit.entry import format_at
from bastion.audit.models import AuditCheckpoint, AuditEvent
from bastion.audit.proofs import Levels
from bastion.db import Database

FORMAT = "bastion-audit-bundle"
VERSION = 1
PAGE = 50_000


class ExportRefused(Exception):
    """The log cannot be exported as it is (no checkpoint yet, or the table no longer matches it)."""


async def leaves_to(db: Database, size: int) -> list[bytes]:
    """The stored leaves at seq 0..size-1, in order."""
    leaves: list[bytes] = []
    while len(leaves) < size:
        rows = await db.all(
            sa.select(AuditEvent.seq, AuditEvent.leaf_hash)
            .where(AuditEvent.seq >= len(leaves), AuditEvent.seq < size)
            .order_by(AuditEvent.seq)
            .limit(PAGE)
        )
        if not rows:
            break
        for row in rows:
            if row.seq != len(leaves):
                raise ExportRefused(f"the log has a gap at seq {len(leaves)}: run `bastion audit verify`")
            leaves.append(bytes(row.leaf_hash))
    return leaves


async def latest_checkpoint(db: Database) -> Any:
    return await db.one(
        sa.select(AuditCheckpoint).order_by(AuditCheckpoint.size.desc(), AuditCheckpoint.id.desc()).limit(1)
    )


async def tree_at_latest_checkpoint(db: Database) -> tuple[Any, Levels]:
    checkpoint = await latest_checkpoint(db)
    if checkpoint is None:
        raise ExportRefused("no signed checkpoint yet: the server signs one within audit.checkpoint_interval")
    levels = Levels(await leaves_to(db, int(checkpoint.size)))
    if levels.size != checkpoint.size or levels.root() != bytes(checkpoint.root_hash):
        raise ExportRefused("the table does not match the latest checkpoint: run `bastion audit verify`")
    return checkpoint, levels


def event_document(row: Any, proof: Sequence[bytes]) -> dict[str, Any]:
    """One exported event: its fields, salt and leaf, and its inclusion proof."""
    details = row.details or {}
    document: dict[str, Any] = {
        "id": row.id,
        "seq": row.seq,
        "at": format_at(row.at),
        "tag": row.tag,
        "outcome": row.outcome,
        "request_id": row.request_id,
        "actor_id": str(row.actor_id) if row.actor_id is not None else None,
        "subject_id": str(row.subject_id) if row.subject_id is not None else None,
        "ip": row.ip,
        "details": details,
        "salt": bytes(row.personal_salt).hex() if row.personal_salt is not None else None,
        "leaf": bytes(row.leaf_hash).hex(),
        "redacted": row.redacted_at is not None,
        "purged": row.purged_at is not None,
        "proof": [node.hex() for node in proof],
    }
    if row.redacted_at is not None and isinstance(details.get("personal"), str):
        document["personal"] = details["personal"]
    return document


async def export_bundle(
    db: Database,
    vkeys: Sequence[str],
    *,
    origin: str,
    since: dt.datetime,
    until: dt.datetime | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """The bundle of the events in [since, until) covered by the latest checkpoint."""
    checkpoint, levels = await tree_at_latest_checkpoint(db)
    events: list[dict[str, Any]] = []
    last_seq = -1
    while True:
        query = sa.select(AuditEvent).where(
            AuditEvent.seq > last_seq, AuditEvent.seq < checkpoint.size, AuditEvent.at >= since
        )
        if until is not None:
            query = query.where(AuditEvent.at < until)
        rows = await db.all(query.order_by(AuditEvent.seq).limit(PAGE))
        if not rows:
            break
        for row in rows:
            events.append(event_document(row, levels.inclusion(int(row.seq))))
            last_seq = int(row.seq)
    notes = await db.all(sa.select(AuditCheckpoint.note).order_by(AuditCheckpoint.size))
    return {
        "format": FORMAT,
        "version": VERSION,
        "origin": origin,
        "created": format_at(now),
        "since": format_at(since),
        "until": format_at(until) if until is not None else None,
        "tree_size": int(checkpoint.size),
        "root": bytes(checkpoint.root_hash).hex(),
        "checkpoint": checkpoint.note,
        "checkpoints": [row.note for row in notes],
        "vkeys": list(vkeys),
        "events": events,
    }
