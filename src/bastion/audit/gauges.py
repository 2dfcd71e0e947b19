"""What ``/metrics`` reads of the audit log at scrape time: the tree's size and the latest checkpoint's time.

Two primary-key / index reads, so a scrape every few seconds costs the
database nothing noticeable. (Kept apart from the audit service so the
metrics need no hook in it; it reads only what the sequencer writes.)
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from bastion.audit.models import AuditCheckpoint, AuditTreeState
from bastion.db import Database

TREE = "main"


async def tree_size(db: Database) -> int | None:
    """Leaves in the tree (None before the migration seeded its row)."""
    size = await db.value(sa.select(AuditTreeState.size).where(AuditTreeState.name == TREE))
    return None if size is None else int(size)


async def latest_checkpoint_at(db: Database) -> dt.datetime | None:
    """When the latest signed checkpoint was made (None before the first)."""
    at: dt.datetime | None = await db.value(sa.select(sa.func.max(AuditCheckpoint.at)))
    return at
