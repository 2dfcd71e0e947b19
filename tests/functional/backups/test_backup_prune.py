"""``backup prune`` on real destinations: retention per destination, leftovers, the ledger untouched, one event."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bastion.audit.models import AuditEvent
from bastion.backups.archive import list_backups
from bastion.backups.destinations import LocalDestination
from bastion.backups.manifest import Manifest, file_digest, sidecar_note
from bastion.backups.prune import prune
from bastion.clock import FrozenClock
from bastion.db import Database, open_database
from bastion.security import NoteKey, sign_note, token_bytes
from bastion.settings import BackupSettings, Settings

SEED = token_bytes(32)
ORIGIN = "prune.example/audit"
VKEY = NoteKey.from_private(ORIGIN, SEED).vkey()
NOW = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)


class Signer:
    kid = "notary-1"

    def sign(self, body: str) -> str:
        return sign_note(body, ORIGIN, SEED)


def put_backup(directory: Path, at: dt.datetime, *, sidecar: bool = True, partial: bool = False) -> str:
    """A backup file (random bytes: prune never opens it) and its signed sidecar."""
    backup_id = f"bastion-{at:%Y%m%dT%H%M%SZ}-{token_bytes(4).hex()}"
    manifest = Manifest(
        id=backup_id,
        created_at=at,
        bastion_version="1.0",
        schema_revision="0009",
        database="sqlite",
        tables={},
        parts={},
        recipients=[],
        notary_kid="notary-1",
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (manifest.name + (".partial" if partial else ""))
    path.write_bytes(token_bytes(64))
    if sidecar and not partial:
        note = sidecar_note(manifest.name, file_digest(path), manifest.to_json(), Signer())
        (directory / (manifest.name + ".manifest")).write_text(note)
    return manifest.name


def names_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = open_database(settings.sqlalchemy_url)
    yield database
    await database.close()


async def test_prune_applies_retention_to_each_destination_and_records_one_event(tmp_path: Path, db: Database) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    days = [NOW - dt.timedelta(days=d, hours=9) for d in range(10)]
    in_first = [put_backup(first, at) for at in days]
    in_second = [put_backup(second, at) for at in days[::2]]  # a destination that missed half of them
    (first / "erasure-ledger.jsonl").write_text("{}\n")
    (first / "notes.txt").write_text("the operator's own file\n")
    leftover = put_backup(first, NOW - dt.timedelta(hours=2), partial=True)
    unsigned = put_backup(first, NOW - dt.timedelta(hours=3), sidecar=False)
    young = put_backup(first, NOW - dt.timedelta(minutes=10), partial=True)

    settings = BackupSettings(keep_last=2, keep_daily=3, keep_weekly=0, keep_monthly=0)
    results = await prune(settings, FrozenClock(NOW), db, [LocalDestination(first), LocalDestination(second)])

    assert results[0].kept == in_first[:3]
    assert set(results[0].deleted) == set(in_first[3:]) | {leftover, unsigned}
    assert results[1].kept == in_second[:3]
    left = names_in(first)
    expected = sorted(
        list(in_first[:3])
        + [n + ".manifest" for n in in_first[:3]]
        + [young + ".partial"]
        + ["erasure-ledger.jsonl", "notes.txt"]
    )
    assert left == expected
    assert [b.name for b in list_backups(LocalDestination(second), [VKEY]) if b.complete] == sorted(in_second[:3])
    events = await db.all(sa.select(AuditEvent.tag, AuditEvent.outcome, AuditEvent.details))
    pruned = [e for e in events if e.tag == "backup:prune"]
    assert len(pruned) == 1
    assert pruned[0].outcome == "success"
    assert [r["kept"] for r in pruned[0].details["results"]] == [3, 3]


async def test_dry_run_deletes_nothing_and_records_nothing(tmp_path: Path, db: Database) -> None:
    names = [put_backup(tmp_path, NOW - dt.timedelta(days=d)) for d in range(6)]
    before = names_in(tmp_path)
    settings = BackupSettings(keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0)
    results = await prune(settings, FrozenClock(NOW), db, [LocalDestination(tmp_path)], dry_run=True)
    assert results[0].kept == names[:1]
    assert len(results[0].deleted) == 5
    assert names_in(tmp_path) == before
    assert await db.value(sa.select(sa.func.count()).where(AuditEvent.tag == "backup:prune")) == 0


async def test_a_sidecar_deleted_first_leaves_no_backup_listed_complete(tmp_path: Path) -> None:
    """Deletion order: the sidecar goes before the file, so an interrupted prune shows nothing half-there."""
    name = put_backup(tmp_path, NOW - dt.timedelta(days=40))
    (tmp_path / (name + ".manifest")).unlink()  # as if prune died between its two deletes
    listed = list_backups(LocalDestination(tmp_path))
    assert [(b.name, b.complete) for b in listed] == [(name, False)]
