"""Retention (bastion.privacy.retention): exactly what is older than its
``[privacy]`` setting goes, in batches, audited with one ``privacy:purge``
event; the audit tree still verifies afterwards; the scheduled job waits for
its interval; ``bastion privacy purge [--dry-run]``. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from bastion.audit import EventTag, Origin
from bastion.audit.models import AuditEvent
from bastion.audit.tree import AuditLog
from bastion.audit.verify import verify_log
from bastion.cli import app as cli
from bastion.db import transaction
from bastion.instance import initialise
from bastion.privacy import retention
from bastion.privacy.retention import SCHEDULED, Purged, Retention
from bastion.sessions.models import RefreshToken, Session
from bastion.settings import load_settings
from factories.audit import write_events
from harness import Harness

RETENTION = {
    "audit_retention": "10d",
    "session_retention": "1d",
    "unverified_account_retention": "2d",
    "outbox_retention": "3d",
    "retention_interval": "1h",
}


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    return {"privacy": RETENTION}


def _mail(outbox: Path, at: dt.datetime, tag: str) -> Path:
    """An outbox file named as OutboxMailer names them (its UTC time first)."""
    outbox.mkdir(mode=0o700, exist_ok=True)
    path = outbox / f"{at:%Y%m%dT%H%M%S%fZ}-{tag}.eml"
    path.write_bytes(b"To: someone@example.com\r\nSubject: hello\r\n\r\nhello\r\n")
    return path


async def _session_ids(harness: Harness) -> set[Any]:
    return {row.id for row in await harness.app.state.db.all(sa.select(Session.id))}


async def _revoke_newest(harness: Harness, user_id: Any) -> Any:
    from factories import unit_of_work

    newest = (await harness.app.state.sessions.list(harness.app.state.db, user_id))[0].id
    async with unit_of_work(harness.app) as uow:
        assert await harness.app.state.sessions.revoke(uow, newest, user_id=user_id, reason="user")
    return newest


async def test_purge_takes_exactly_what_is_old_and_the_tree_still_verifies(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """V14.2.7: personal data is deleted once its retention ends (audit events, ended sessions,
    abandoned sign-ups, dev mail), and nothing younger; the purge is audited (V16.2.1) and the
    tamper-evident log still verifies (V16.4.2)."""
    monkeypatch.setattr(retention, "BATCH", 7)  # several batches from a handful of rows
    state, db, clock = harness.app.state, harness.app.state.db, harness.clock
    log: AuditLog = state.audit
    await log.stop()  # the test sequences the log itself
    outbox = harness.settings.data_dir / "outbox"
    t0 = clock.now()

    # Day 0: an abandoned sign-up, an account an admin made (unverified too), a user with
    # one ended and one live session, some events; all of it sequenced.
    await harness.register("abandoned@example.com", verify=False)
    await harness.user("made-by-admin@example.com", verified=False)
    alice = await harness.user("alice@example.com")
    await harness.sign_in(alice)
    ended = await _revoke_newest(harness, alice.id)
    await harness.sign_in(alice)
    await write_events(db, clock, 20)
    old_mail = _mail(outbox, t0, "old")
    await log.sequence_now()
    await log.checkpoint_now()
    old_events = int(
        await db.value(sa.select(sa.func.count()).select_from(AuditEvent).where(AuditEvent.seq.is_not(None))) or 0
    )

    # Day 11: a new sign-up and a session that ended just now: both young.
    clock.advance(days=11)
    fresh_mail = _mail(outbox, clock.now() - dt.timedelta(days=2), "fresh")
    await harness.register("fresh@example.com", verify=False)
    bob = await harness.user("bob@example.com")
    await harness.sign_in(bob)
    recent = await _revoke_newest(harness, bob.id)
    live = {row.id for row in await state.sessions.list(db, alice.id)}
    assert len(live) == 1  # refresh_token_ttl is 30 days: alice's second session still runs

    service: Retention = state.retention
    expected = Purged(audit_events=old_events, sessions=1, unverified_accounts=1, outbox_mails=1)
    assert await service.count() == expected
    assert await service.count() == expected  # counting changes nothing
    assert await service.purge(origin=Origin.cli()) == expected

    identity = state.identity
    assert await identity.by_email(db, "abandoned@example.com") is None
    for kept in ("made-by-admin@example.com", "fresh@example.com", "alice@example.com", "bob@example.com"):
        assert await identity.by_email(db, kept) is not None, kept
    sessions = await _session_ids(harness)
    assert ended not in sessions
    assert recent in sessions
    assert live <= sessions
    assert not await db.all(sa.select(RefreshToken).where(RefreshToken.session_id == ended))
    assert not old_mail.exists()
    assert fresh_mail.exists()
    # Every old event emptied, every newer one intact; the abandoned account is named nowhere.
    old = await db.all(sa.select(AuditEvent).where(AuditEvent.at < t0 + dt.timedelta(days=1)))
    assert old
    assert all(e.tag == "purged" and e.actor_id is None and e.details == {} for e in old)
    newer = await db.all(sa.select(AuditEvent).where(AuditEvent.at > t0 + dt.timedelta(days=1)))
    assert all(e.purged_at is None for e in newer)
    purges = [e for e in newer if e.tag == EventTag.PRIVACY_PURGE]
    assert [e.details for e in purges] == [
        {"audit_events": old_events, "sessions": 1, "unverified_accounts": 1, "outbox_mails": 1}
    ]

    await log.sequence_now()
    await log.checkpoint_now()
    report = await verify_log(db, state.keys.hmac, log.notary.vkeys(), origin=log.origin, now=clock.now())
    assert report.intact, report.findings
    assert report.purged == old_events

    # Nothing is left to purge; a second run says so (and is audited too).
    assert await service.purge(origin=Origin.cli()) == Purged()


async def test_the_scheduled_job_purges_once_per_interval(harness: Harness) -> None:
    """The job waits an interval after it first looks, then purges every ``retention_interval``,
    counted from the last purge's event (so a restart does not purge early)."""
    service: Retention = harness.app.state.retention
    db, clock = harness.app.state.db, harness.clock

    async def purges() -> int:
        query = sa.select(sa.func.count()).select_from(AuditEvent).where(AuditEvent.tag == EventTag.PRIVACY_PURGE)
        return int(await db.value(query) or 0)

    fresh = Retention(harness.settings, db, clock)
    await fresh.tick()
    assert await purges() == 0  # a server that just started deletes nothing in its first interval
    clock.advance(minutes=59)
    await fresh.tick()
    assert await purges() == 0
    clock.advance(minutes=1)
    await fresh.tick()
    assert await purges() == 1
    restarted = Retention(harness.settings, db, clock)
    await restarted.tick()
    assert await purges() == 1  # the last purge's event says it is not due
    clock.advance(hours=1)
    await restarted.tick()
    assert await purges() == 2
    jobs = [job for job in harness.app.state.jobs if getattr(job, "name", None) == retention.JOB]
    assert len(jobs) == 1
    assert service is not fresh


def test_cli_purge_and_dry_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bastion privacy purge --dry-run`` counts and changes nothing; without it, it purges and audits."""
    data = tmp_path / "data"
    monkeypatch.setenv("BASTION_PRIVACY__OUTBOX_RETENTION", "3d")
    settings = load_settings(data)
    initialise(settings)
    now = dt.datetime.now(dt.UTC)
    old, fresh = _mail(data / "outbox", now - dt.timedelta(days=4), "old"), _mail(data / "outbox", now, "fresh")
    runner = CliRunner()

    dry = runner.invoke(cli, ["privacy", "purge", "--dry-run", "--data-dir", str(data)])
    assert dry.exit_code == 0, dry.stderr
    assert "would purge 1 outbox mails" in dry.stdout
    assert old.exists()

    done = runner.invoke(cli, ["privacy", "purge", "--data-dir", str(data)])
    assert done.exit_code == 0, done.stderr
    assert "purged 1 outbox mails" in done.stdout
    assert "purged 0 unverified accounts" in done.stdout
    assert not old.exists()
    assert fresh.exists()

    async def events() -> list[Any]:
        from bastion.db import open_database

        database = open_database(settings.sqlalchemy_url)
        try:
            async with transaction(database) as tx:
                return await tx.all(sa.select(AuditEvent).where(AuditEvent.tag == EventTag.PRIVACY_PURGE))
        finally:
            await database.close()

    found = asyncio.run(events())
    assert len(found) == 1
    assert found[0].details["outbox_mails"] == 1
    assert found[0].request_id == "cli"


async def test_two_purges_at_once_share_the_work_and_count_each_row_once(harness: Harness) -> None:
    """A ``bastion privacy purge`` while serve's job purges: every old row goes exactly once, the
    two runs' counts add up to what there was, and each run is its own event."""
    state, db, clock = harness.app.state, harness.app.state.db, harness.clock
    log: AuditLog = state.audit
    await log.stop()
    for n in range(4):
        await harness.register(f"abandoned{n}@example.com", verify=False)
    alice = await harness.user("alice@example.com")
    for _ in range(3):
        await harness.sign_in(alice)
        await _revoke_newest(harness, alice.id)
    await write_events(db, clock, 30)
    for n in range(5):
        _mail(harness.settings.data_dir / "outbox", clock.now() - dt.timedelta(days=1, seconds=n), f"old{n}")
    await log.sequence_now()
    clock.advance(days=11)
    service: Retention = state.retention
    expected = await service.count()
    assert expected.unverified_accounts == 4
    assert expected.sessions == 3
    first, second = await asyncio.gather(service.purge(origin=Origin.cli()), service.purge(origin=SCHEDULED))
    for field in ("audit_events", "sessions", "unverified_accounts", "outbox_mails"):
        assert getattr(first, field) + getattr(second, field) == getattr(expected, field), field
    assert await service.count() == Purged()
    query = sa.select(sa.func.count()).select_from(AuditEvent).where(AuditEvent.tag == EventTag.PRIVACY_PURGE)
    assert await db.value(query) == 2
