"""The tamper-evident log in a running app: leaves written with the events,
the sequencer (contiguous seq, seals, the tree in step), signed checkpoints
stored and shipped to every sink, erasure that still verifies, and the rule
that an event that cannot be written fails its request. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa

from bastion.audit.entry import row_leaf
from bastion.audit.models import AuditCheckpoint, AuditEvent
from bastion.audit.retention import purge_events_before, redact_events
from bastion.audit.sinks import SyslogSink, WebhookSink
from bastion.audit.tree import BACKDATE_TOLERANCE, SEAL_CONTEXT, AuditLog, seal_message, tree_state
from bastion.audit.verify import verify_log
from bastion.clock import FrozenClock
from bastion.db import transaction
from bastion.security import keyed_hash_matches, merkle
from bastion.security.notes import parse_checkpoint, verify_note
from factories.audit import rows, write_events
from harness import Harness


def _log(harness: Harness) -> AuditLog:
    log = harness.app.state.audit
    assert isinstance(log, AuditLog)
    return log


async def _quiet_log(harness: Harness) -> AuditLog:
    """The app's AuditLog with its background loop stopped: the test alone decides when it runs."""
    log = _log(harness)
    await log.stop()
    return log


async def _verify(harness: Harness, *directories: Path) -> Any:
    log = _log(harness)
    return await verify_log(
        harness.app.state.db,
        harness.app.state.keys.hmac,
        log.notary.vkeys(),
        origin=log.origin,
        now=harness.clock.now(),
        directories=directories,
    )


async def test_events_carry_their_leaf_and_the_sequencer_builds_the_tree(
    harness: Harness, checkpoint_dir: Path
) -> None:
    """V16.4.2: every event is a sealed leaf of the RFC 6962 tree, and a signed checkpoint leaves the database."""
    await harness.register("alice@example.com")
    await harness.login("alice@example.com")
    log = await _quiet_log(harness)
    await log.sequence_now()
    events = await rows(harness.app.state.db)
    assert len(events) >= 3
    for event in events:
        assert event.leaf_hash is not None
        assert len(event.personal_salt) == 32
        assert row_leaf(event) == event.leaf_hash
        assert keyed_hash_matches(
            harness.app.state.keys.hmac, seal_message(event.seq, event.id, event.leaf_hash), SEAL_CONTEXT, event.seal
        )
    assert sorted(e.seq for e in events) == list(range(len(events)))
    leaves = [bytes(e.leaf_hash) for e in sorted(events, key=lambda e: e.seq)]
    state = await tree_state(harness.app.state.db)
    assert (state.size, bytes(state.root_hash)) == (len(events), merkle.root(leaves))

    checkpoint = await log.checkpoint_now()
    assert checkpoint is not None
    await log.ship_pending()
    body = verify_note(checkpoint.note, log.notary.vkeys())
    assert parse_checkpoint(body) == ("test.example/audit", len(events), merkle.root(leaves))
    assert body.splitlines()[3].startswith("time ")
    stored = await harness.app.state.db.one(sa.select(AuditCheckpoint))
    assert (stored.size, stored.note, stored.key_id) == (len(events), checkpoint.note, checkpoint.key_id)
    assert (checkpoint_dir / f"{len(events)}.checkpoint").read_text() == checkpoint.note
    assert (checkpoint_dir / "latest").read_text() == checkpoint.note
    # Nothing new: no second checkpoint of the same tree.
    assert await log.checkpoint_now() is None
    report = await _verify(harness, checkpoint_dir)
    assert report.intact, report.findings
    assert (report.checkpoints, report.checkpoint_files) == (1, 1)


async def test_checkpoints_come_after_every_n_events_and_at_the_interval(harness: Harness) -> None:
    log = await _quiet_log(harness)
    log.settings = log.settings.model_copy(
        update={"audit": log.settings.audit.model_copy(update={"checkpoint_every": 10, "checkpoint_interval": 60.0})}
    )
    db = harness.app.state.db
    await write_events(db, harness.clock, 10)
    await log.sequence_now()
    first = await log.checkpoint_if_due()
    assert first is not None
    assert first.size >= 10
    await write_events(db, harness.clock, 3)
    await log.sequence_now()
    assert await log.checkpoint_if_due() is None  # 3 events, no time passed
    harness.clock.advance(seconds=61)
    second = await log.checkpoint_if_due()
    assert second is not None
    assert second.size == first.size + 3
    assert await log.checkpoint_if_due() is None  # the tree did not grow


async def test_the_background_job_sequences_and_checkpoints_by_itself(harness: Harness) -> None:
    """The lifespan's job (lease "audit-sequencer") does the work with nobody calling it."""
    db = harness.app.state.db
    await write_events(db, harness.clock, 5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if await db.value(sa.select(sa.func.count()).select_from(AuditCheckpoint)):
            break
        await asyncio.sleep(0.05)
    state = await tree_state(db)
    assert state.size >= 5
    assert await db.value(sa.select(sa.func.count()).select_from(AuditEvent).where(AuditEvent.seq.is_(None))) == 0
    assert await db.value(sa.select(sa.func.count()).select_from(AuditCheckpoint)) >= 1


async def test_two_sequencers_racing_never_fork_the_tree(harness: Harness) -> None:
    """Concurrency: the tree's compare-and-set lets one batch in; seq stays 0..n-1 with no gap or repeat."""
    db = harness.app.state.db
    mine = await _quiet_log(harness)  # only the two below sequence
    other = AuditLog(mine.settings, db, harness.clock, harness.app.state.keys.hmac, mine.notary)
    third = AuditLog(mine.settings, db, harness.clock, harness.app.state.keys.hmac, mine.notary)

    async def writer() -> None:
        for _ in range(10):
            await write_events(db, harness.clock, 40)
            await asyncio.sleep(0)

    async def sequencer(log: AuditLog) -> None:
        for _ in range(30):
            await log.sequence_now()
            await asyncio.sleep(0)

    await asyncio.gather(writer(), sequencer(other), sequencer(third))
    await other.sequence_now()
    events = await rows(db)
    assert sorted(e.seq for e in events) == list(range(len(events)))
    state = await tree_state(db)
    assert state.size == len(events)
    await other.checkpoint_now()
    assert (await _verify(harness)).intact


async def test_redacted_and_purged_events_still_verify(harness: Harness) -> None:
    """Erasure is not tampering: pseudonymised and purged events keep the tree and checkpoints verifiable."""
    db = harness.app.state.db
    await harness.register("alice@example.com")
    user = await harness.app.state.identity.by_email(db, "alice@example.com")
    await write_events(db, harness.clock, 20)
    log = await _quiet_log(harness)
    await log.sequence_now()
    await log.checkpoint_now()
    harness.clock.advance(days=1)
    await write_events(db, harness.clock, 5)
    await log.sequence_now()
    await log.checkpoint_now()
    async with transaction(db) as tx:
        redacted = await redact_events(tx, user.id, now=harness.clock.now())
    async with transaction(db) as tx:
        purged = await purge_events_before(tx, harness.clock.now() - dt.timedelta(hours=1), now=harness.clock.now())
    assert redacted >= 1
    assert purged >= 20
    gone = await db.all(sa.select(AuditEvent).where(AuditEvent.redacted_at.is_not(None)))
    assert all(e.actor_id is None and e.subject_id is None and e.ip is None for e in gone)
    assert all(e.personal_salt is None for e in gone)
    assert not await db.all(sa.select(AuditEvent).where(AuditEvent.subject_id == user.id))
    report = await _verify(harness)
    assert report.intact, report.findings
    assert report.purged == purged
    assert report.redacted == await db.value(
        sa.select(sa.func.count()).select_from(AuditEvent).where(AuditEvent.redacted_at.is_not(None))
    )
    # A redacted event whose remaining content is changed is still caught.
    target = gone[-1] if gone[-1].purged_at is None else None
    if target is not None:
        async with transaction(db) as tx:
            await tx.execute(sa.update(AuditEvent).where(AuditEvent.id == target.id).values(outcome="denied"))
        report = await _verify(harness)
        first = report.first()
        assert first is not None
        assert (first.kind, first.event_id) == ("altered", target.id)


async def test_an_event_that_cannot_be_written_fails_its_request(harness: Harness) -> None:
    """V16.3.1 and the issue's rule: the event shares the transaction; no event, no change."""
    db = harness.app.state.db

    def refuse(connection: sa.Connection) -> None:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'no'); END"
            )
        else:
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'no'; END $$ "
                "LANGUAGE plpgsql"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
            )

    await db.run_sync(refuse)
    answer = await harness.client.post(
        "/api/v1/auth/register", json={"email": "mallory@example.com", "password": "tangerine-orbit-cascade-91"}
    )
    assert answer.status_code >= 500
    assert await harness.app.state.identity.by_email(db, "mallory@example.com") is None


class _Receiver(BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.bodies.append((self.headers["Content-Type"], self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/checkpoints", _Receiver.bodies
    finally:
        server.shutdown()


async def test_checkpoints_reach_a_webhook_and_syslog(harness: Harness, receiver: tuple[str, list[Any]]) -> None:
    url, bodies = receiver
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    log = await _quiet_log(harness)
    log.sinks = [WebhookSink(url), SyslogSink(f"127.0.0.1:{udp.getsockname()[1]}")]
    await write_events(harness.app.state.db, harness.clock, 3)
    await log.sequence_now()
    checkpoint = await log.checkpoint_now()
    await log.ship_pending()
    assert checkpoint is not None
    assert bodies == [("text/plain; charset=utf-8", checkpoint.note.encode())]
    line = udp.recv(65536).decode()
    udp.close()
    assert line.startswith("<134>1 ")
    assert "audit-checkpoint" in line
    assert "\n" not in line
    encoded = line.rsplit("note=", 1)[1]
    assert base64.b64decode(encoded).decode() == checkpoint.note


async def test_a_failing_sink_never_loses_the_checkpoint(harness: Harness) -> None:
    """The stored checkpoint stands; the failure is logged and recorded as audit:sink_failed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens here once closed
    log = await _quiet_log(harness)
    log.sinks = [WebhookSink(f"http://127.0.0.1:{closed}/", attempts=2, pause=0.01)]
    db = harness.app.state.db
    await write_events(db, harness.clock, 3)
    await log.sequence_now()
    checkpoint = await log.checkpoint_now()
    await log.ship_pending()
    assert checkpoint is not None
    assert await db.value(sa.select(AuditCheckpoint.size)) == checkpoint.size
    failed = await db.all(sa.select(AuditEvent).where(AuditEvent.tag == "audit:sink_failed"))
    assert len(failed) == 1
    assert failed[0].outcome == "failure"
    assert failed[0].details["size"] == checkpoint.size


async def test_a_slow_or_lagging_writer_is_sequenced_and_a_back_dated_row_is_refused_loudly(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """V16.4.2: an honest row dated minutes behind the log (a long transaction, an
    instance whose clock lags) joins the tree, so an untouched log verifies; a row
    dated more than BACKDATE_TOLERANCE behind it (inserted into the past, here with a
    valid leaf) stays out, is logged as an error and recorded once as audit:backdated,
    and verify names it as inserted."""
    log = await _quiet_log(harness)
    db = harness.app.state.db
    caplog.set_level(logging.INFO)
    await write_events(db, harness.clock, 3)
    await log.sequence_now()
    lagging = FrozenClock(harness.clock.now() - dt.timedelta(minutes=5))
    await write_events(db, lagging, 1)
    assert await log.sequence_now() == 1
    assert await db.value(sa.select(sa.func.count()).where(AuditEvent.seq.is_(None))) == 0
    assert (await _verify(harness)).intact

    back_dated = FrozenClock(harness.clock.now() - BACKDATE_TOLERANCE - dt.timedelta(seconds=1))
    await write_events(db, back_dated, 1)
    inserted = int(await db.value(sa.select(sa.func.max(AuditEvent.id))))
    await log.sequence_now()
    assert await db.value(sa.select(AuditEvent.seq).where(AuditEvent.id == inserted)) is None
    (signal,) = await db.all(sa.select(AuditEvent).where(AuditEvent.tag == "audit:backdated"))
    assert (signal.outcome, signal.details["events"]) == ("failure", [inserted])
    assert any("left out of the tree" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    await log.sequence_now()  # reported once, not on every pass
    assert await db.value(sa.select(sa.func.count()).where(AuditEvent.tag == "audit:backdated")) == 1
    report = await _verify(harness)
    assert not report.intact
    assert [(f.kind, f.event_id) for f in report.findings] == [("inserted", inserted)]


async def test_a_webhook_sink_is_named_by_its_origin_never_its_token(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """V16.2.5 (no credentials in logs): a checkpoint webhook's URL often holds a
    token in its path; neither the log line nor the audit:sink_failed event shows it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    log = await _quiet_log(harness)
    log.sinks = [WebhookSink(f"http://user:hunter2@127.0.0.1:{closed}/hooks/T0KEN?key=S3CRET", attempts=1)]
    db = harness.app.state.db
    caplog.set_level(logging.INFO)
    await write_events(db, harness.clock, 1)
    await log.sequence_now()
    assert await log.checkpoint_now() is not None
    await log.ship_pending()
    (failed,) = await db.all(sa.select(AuditEvent).where(AuditEvent.tag == "audit:sink_failed"))
    assert failed.details["sink"] == f"webhook:http://127.0.0.1:{closed}/…"
    shown = caplog.text + str(failed.details)
    assert "sink failed" in caplog.text
    for secret in ("T0KEN", "S3CRET", "hunter2", "/hooks"):
        assert secret not in shown


async def test_one_sequencer_holds_the_lease_and_another_takes_over_when_it_stops(harness: Harness) -> None:
    """Once cluster-wide: a second process's job waits while the first holds "audit-sequencer"."""
    first = await _quiet_log(harness)
    db = harness.app.state.db
    second = AuditLog(first.settings, db, harness.clock, harness.app.state.keys.hmac, first.notary)
    assert await first.loop.hold_now()
    assert not await second.loop.hold_now()
    await first.stop()  # releases the lease
    assert await second.loop.hold_now()
    await second.stop()


async def test_details_with_integers_past_64_bits_verify(harness: Harness) -> None:
    """Details may hold any JSON integer (tests/unit/db): the leaf and verify agree on them too."""
    from bastion.audit import EventTag, Origin, record_event

    log = await _quiet_log(harness)
    db = harness.app.state.db
    async with transaction(db) as tx:
        record_event(tx, harness.clock, EventTag.ROLE_CHANGE, origin=Origin(), details={"n": 2**100, "m": -(2**70)})
    await log.sequence_now()
    await log.checkpoint_now()
    report = await _verify(harness)
    assert report.intact, report.findings
