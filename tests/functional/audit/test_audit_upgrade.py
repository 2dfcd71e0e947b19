"""Upgrading to 0008: events written before the tree existed get their salt
and leaf as record_event would have written them, the sequencer takes them
into the tree, and the log verifies; 0008's triggers still refuse any other
change. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bastion.audit.entry import row_leaf
from bastion.audit.models import AuditEvent
from bastion.audit.tree import AuditLog
from bastion.audit.verify import verify_log
from bastion.clock import FrozenClock
from bastion.db import open_database, transaction
from bastion.migrations import upgrade
from bastion.security import Keyring, MasterKey
from bastion.security.notes import Notary

OLD_EVENTS = sa.table(
    "audit_events",
    sa.column("at", sa.DateTime(timezone=True)),
    sa.column("tag"),
    sa.column("outcome"),
    sa.column("actor_id", sa.Uuid),
    sa.column("subject_id", sa.Uuid),
    sa.column("ip"),
    sa.column("request_id"),
    sa.column("details", sa.JSON),
)


class _Notary:
    def __init__(self, ring: Keyring) -> None:
        self.ring = Notary(ring)

    def sign(self, body: str) -> tuple[str, str]:
        signed = self.ring.sign(body, "upgrade.example/audit")
        return signed.kid, signed.note

    def vkeys(self) -> list[str]:
        return self.ring.vkeys("upgrade.example/audit")


def test_events_from_before_the_tree_are_backfilled_sequenced_and_verify(
    tmp_path: Path, database_url: str | None
) -> None:
    url = database_url or f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0007")
    user = uuid.uuid4()
    at = dt.datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)

    async def old_events() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                naive = at.replace(tzinfo=None) if url.startswith("sqlite") else at
                rows = [
                    {"at": naive + dt.timedelta(seconds=i), "tag": "auth:login", "outcome": "success",
                     "actor_id": user, "subject_id": user, "ip": "203.0.113.7", "request_id": f"r{i}",
                     "details": {"n": i}}
                    for i in range(30)
                ]  # fmt: skip
                await connection.execute(sa.insert(OLD_EVENTS), rows)
        finally:
            await engine.dispose()

    asyncio.run(old_events())
    upgrade(url)

    async def check() -> None:
        db = open_database(url)
        hmac_ring = Keyring.load_or_create(tmp_path / "keys", "hmac", MasterKey.generate())
        notary = _Notary(Keyring.load_or_create(tmp_path / "keys", "notary", MasterKey.generate()))
        try:
            events = await db.all(sa.select(AuditEvent).order_by(AuditEvent.id))
            assert len(events) == 30
            assert all(row_leaf(e) == e.leaf_hash for e in events)
            assert len({e.personal_salt for e in events}) == 30
            from bastion.settings import load_settings

            settings = load_settings(tmp_path / "data", audit={"origin": "upgrade.example/audit"})
            log = AuditLog(settings, db, FrozenClock(), hmac_ring, notary)
            assert await log.sequence_now() == 30
            await log.checkpoint_now()
            report = await verify_log(
                db, hmac_ring, notary.vkeys(), origin="upgrade.example/audit", now=dt.datetime.now(dt.UTC)
            )
            assert report.intact, report.findings
            assert report.sequenced == 30
            # The narrowed guard: the application still cannot rewrite or delete history.
            for change in (
                sa.update(AuditEvent).where(AuditEvent.id == events[0].id).values(tag="auth:logout"),
                sa.update(AuditEvent).where(AuditEvent.id == events[0].id).values(seq=99),
                sa.delete(AuditEvent).where(AuditEvent.id == events[0].id),
            ):
                with pytest.raises(Exception, match="append-only"):
                    async with transaction(db) as tx:
                        await tx.execute(change)
        finally:
            await db.close()

    asyncio.run(check())
