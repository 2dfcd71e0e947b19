"""The restore drill, from the command line and as serve schedules it, on both databases."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from bastion.audit.models import AuditEvent
from bastion.backups.archive import list_backups
from bastion.backups.create import create_backup
from bastion.backups.destinations import destinations_of
from bastion.backups.schedule import scheduled_work
from bastion.cli import app as cli
from bastion.clock import FrozenClock
from bastion.db import Database, open_database
from bastion.secrets import open_keyrings
from bastion.security.age import new_identity
from bastion.settings import Settings
from factories.data import COLLECTIONS
from harness import Harness

IDENTITY, RECIPIENT = new_identity()
runner = CliRunner()


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    return {"collections": COLLECTIONS, "backups": {"recipients": [RECIPIENT]}}


async def bastion(*args: str) -> tuple[int, str, str]:
    result = await asyncio.to_thread(runner.invoke, cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


async def drill_events(settings: Settings) -> list[Any]:
    db = open_database(settings.sqlalchemy_url)
    try:
        query = sa.select(AuditEvent.outcome, AuditEvent.details).where(AuditEvent.tag == "backup:drill")
        return await db.all(query.order_by(AuditEvent.id))
    finally:
        await db.close()


def write_identity(path: Path) -> Path:
    path.write_text(IDENTITY + "\n")
    path.chmod(0o600)
    return path


async def test_drill_from_the_command_line(harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No backup: exit 2; a good one: signatures only, then a full restore; a bit flipped: exit 1, and
    each drill is a backup:drill event (ASVS V14.2.4: integrity verification of stored data)."""
    # The command line finds the instance's database as a server does (PostgreSQL: the environment).
    monkeypatch.setenv("BASTION_DATABASE_URL", harness.settings.sqlalchemy_url)
    data_dir = str(harness.settings.data_dir)
    identity = write_identity(tmp_path / "identity.txt")
    code, _, stderr = await bastion("backup", "drill", "--data-dir", data_dir)
    assert code == 2
    assert "no complete backup" in one_error(stderr)

    alice = await harness.signed_in("alice@example.com")
    await harness.create(alice, "notes", {"title": "drilled", "secret": "s"})
    created = await create_backup(harness.settings, open_keyrings(harness.settings))
    code, stdout, stderr = await bastion("backup", "drill", "--data-dir", data_dir)
    assert code == 0, stderr
    assert "signatures and file hash only" in stdout
    code, stdout, stderr = await bastion("backup", "drill", "--identity", str(identity), "--data-dir", data_dir)
    assert code == 0, stderr
    assert f"good: {created.manifest.id}" in stdout
    assert "every table checked" in stdout

    assert created.path is not None
    data = bytearray(created.path.read_bytes())
    data[len(data) // 3] ^= 0x10
    created.path.write_bytes(bytes(data))
    code, _, stderr = await bastion("backup", "drill", "--identity", str(identity), "--data-dir", data_dir)
    assert code == 1
    assert "SHA-256" in one_error(stderr)

    events = await drill_events(harness.settings)
    assert [(e.outcome, e.details.get("full")) for e in events] == [
        ("failure", False),
        ("success", False),
        ("success", True),
        ("failure", True),
    ]
    assert events[2].details["id"] == created.manifest.id
    assert events[2].details["seconds"] >= 0
    assert "SHA-256" in events[3].details["reason"]


async def test_the_scheduled_work_backs_up_prunes_and_drills(harness: Harness, tmp_path: Path) -> None:
    """serve's "backups" tick with a drill identity: a real backup at 03:00, then prune, then the
    Sunday drill restoring it; each an event, and the retention applied."""
    identity = write_identity(tmp_path / "drill-identity.txt")
    settings = harness.settings.model_copy(
        update={
            "backups": harness.settings.backups.model_copy(
                update={
                    "drill_identity_file": identity,
                    "keep_last": 1,
                    "keep_daily": 0,
                    "keep_weekly": 0,
                    "keep_monthly": 0,
                }
            )
        }
    )
    keys = open_keyrings(settings)
    # 2026-03-01 is a Sunday: the backup is due at 03:00, the drill at 04:30.
    clock = FrozenClock(dt.datetime(2026, 3, 1, 2, 59, tzinfo=dt.UTC))
    db: Database = open_database(settings.sqlalchemy_url)
    try:
        work = scheduled_work(settings, clock, db, keys)
        await work.tick()
        clock.advance(minutes=1)
        await work.tick()
        clock.advance(minutes=91)
        await work.tick()
        rows = await db.all(
            sa.select(AuditEvent.tag, AuditEvent.outcome, AuditEvent.details)
            .where(AuditEvent.tag.like("backup:%"))
            .order_by(AuditEvent.id)
        )
        assert [(r.tag, r.outcome) for r in rows] == [
            ("backup:create", "success"),
            ("backup:prune", "success"),
            ("backup:drill", "success"),
        ]
        assert rows[2].details["full"] is True
        assert rows[2].details["id"] == rows[0].details["id"]
        # A second day: a new backup, and prune (keep_last 1) removes the first.
        clock.advance(days=1)
        await work.tick()
        listed = [b for b in list_backups(destinations_of(settings)[0]) if b.complete]
        assert len(listed) == 1
        assert listed[0].created_at == dt.datetime(2026, 3, 2, 4, 31, tzinfo=dt.UTC)
    finally:
        await db.close()
