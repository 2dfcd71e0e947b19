"""The scheduled verification of ``serve`` (``[audit] verify_interval``, the
``audit-verify`` job): it verifies the log as ``bastion audit verify`` does,
off the event loop, and records the same ``audit:verify`` event, so that
tampering raises the monitor's ``audit-verify-failed`` alert without an
operator running anything. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bastion.audit import verify_job
from bastion.audit.models import AuditEvent
from bastion.clock import FrozenClock
from bastion.db import transaction
from bastion.db.leases import LeasedLoop
from bastion.runtime import Services, build_services
from bastion.settings import ConfigError, Settings, load_settings
from factories.audit import write_events


@pytest.fixture
async def services(make_settings: Callable[..., Settings], tmp_path: Path) -> AsyncIterator[Services]:
    settings = make_settings(audit={"checkpoint_dir": str(tmp_path / "checkpoints"), "origin": "job.example/audit"})
    built = build_services(settings, FrozenClock())
    try:
        yield built
    finally:
        await built.close()


async def _log(services: Services, count: int = 300) -> None:
    """``count`` events, sequenced, with a checkpoint in the database and one shipped to checkpoint_dir."""
    assert services.audit is not None
    await write_events(services.db, services.clock, count)
    await services.audit.sequence_now()
    await services.audit.checkpoint_now()
    await services.audit.ship_pending()


async def _verifications(services: Services) -> list[Any]:
    return list(
        await services.db.all(sa.select(AuditEvent).where(AuditEvent.tag == "audit:verify").order_by(AuditEvent.id))
    )


async def _alter(services: Services, event_id: int) -> None:
    """What an attacker with a database client does: lift the append-only guard, change a row."""

    def unguard(connection: sa.Connection) -> None:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("DROP TRIGGER IF EXISTS audit_events_no_update")
        else:
            connection.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER USER")

    await services.db.run_sync(unguard)
    async with transaction(services.db) as tx:
        await tx.execute(sa.update(AuditEvent).where(AuditEvent.id == event_id).values(outcome="success", tag="x:y"))


async def test_the_job_verifies_an_intact_log_on_schedule_off_the_event_loop(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """V16.4.2 (logs protected from modification, checked): serve's audit-verify job, once its
    interval has passed, verifies the log and the shipped checkpoint files (V16.4.3) on a thread
    of its own and records a successful audit:verify event; not before the interval."""
    await _log(services)
    assert services.audit_verify is not None
    assert "audit-verify" in [job.name for job in services.jobs if isinstance(job, LeasedLoop)]
    threads: list[int] = []
    verify_log = verify_job.verify_log

    async def on_which_thread(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return await verify_log(*args, **kwargs)

    monkeypatch.setattr(verify_job, "verify_log", on_which_thread)
    clock = services.clock
    assert isinstance(clock, FrozenClock)

    await services.audit_verify.tick()  # never verified: counts from this first look
    clock.advance(hours=23)
    await services.audit_verify.tick()
    assert await _verifications(services) == []

    clock.advance(hours=1)
    await services.audit_verify.tick()
    [event] = await _verifications(services)
    assert (event.outcome, event.request_id) == ("success", "audit-verify")
    assert event.details["findings"] == 0
    assert event.details["size"] == 300
    assert threads
    assert threads[0] != threading.get_ident()

    clock.advance(hours=12)  # the next one is due a day after this one
    await services.audit_verify.tick()
    assert len(await _verifications(services)) == 1


async def test_a_tampered_row_is_a_failed_verification_and_a_critical_alert(services: Services) -> None:
    """V16.4.2: after a row of the log is changed behind the application's back, the scheduled
    verification records a failed audit:verify naming it, and the detection tail raises the
    critical audit-verify-failed alert from that event (no operator ran `bastion audit verify`)."""
    await _log(services)
    assert services.audit_verify is not None
    assert services.monitor is not None
    target = int(await services.db.value(sa.select(AuditEvent.id).where(AuditEvent.seq == 150)))
    await _alter(services, target)
    await services.monitor.tail.start_at_end()

    report = await services.audit_verify.verify_now()
    assert not report.intact
    [event] = await _verifications(services)
    assert (event.outcome, event.request_id) == ("failure", "audit-verify")
    assert event.details["first_bad_event"] == target

    alerts = await services.monitor.poll()
    assert [(alert.rule, alert.severity) for alert in alerts] == [("audit-verify-failed", "critical")]


def test_verify_interval_is_a_positive_duration(tmp_path: Path) -> None:
    """[audit] verify_interval takes a duration ("12h"); zero or less is refused in one line."""
    assert load_settings(tmp_path, audit={"verify_interval": "12h"}).audit.verify_interval == 12 * 3600
    assert load_settings(tmp_path).audit.verify_interval == 86400
    for bad in ("0s", "-1h"):
        with pytest.raises(ConfigError) as refused:
            load_settings(tmp_path, audit={"verify_interval": bad})
        message = str(refused.value)
        assert "audit.verify_interval" in message
        assert "\n" not in message.strip()


async def test_a_verification_under_way_stops_with_serve(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelling the job's tick (serve stopping past the loop's stop_timeout) stops the
    verification's thread at its next page too, rather than leaving it reading the log."""
    assert services.audit_verify is not None
    started, ended = threading.Event(), threading.Event()

    async def endless(*args: Any, progress: Callable[[int, int], None], **kwargs: Any) -> Any:
        try:
            pages = 0
            while True:  # a log without end: one "page" every 10 ms
                started.set()
                await asyncio.sleep(0.01)
                pages += 1
                progress(pages, 0)
        finally:
            ended.set()

    monkeypatch.setattr(verify_job, "verify_log", endless)
    running = asyncio.create_task(services.audit_verify.verify_now())
    assert await asyncio.to_thread(started.wait, 5)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert await asyncio.to_thread(ended.wait, 5)
    assert await _verifications(services) == []
