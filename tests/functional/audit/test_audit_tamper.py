"""Acceptance: a log of 100,000 events, tampered with the database's own
tools (``sqlite3``, ``psql``: not Bastion's code), is caught by ``bastion
audit verify``, which exits 1 with the bad event's id as its last line;
a rewrite of the whole table with a recomputed tree (and even re-signed
database checkpoints) is caught by the checkpoint files shipped outside the
database. SQLite and PostgreSQL.

The log is built once per database for this module (it takes most of a
minute) and each test tampers with a copy of its own: the data dir and the
shipped files copied, the PostgreSQL database made from it as a TEMPLATE.

V16.4.2 (logs protected from unauthorized modification), V16.4.3 (logs sent
to a separate system).
"""

# ruff: noqa: S608 - the tests write raw SQL on purpose: they are the attacker with a database client

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from bastion.audit.entry import leaf_of, personal_hash
from bastion.audit.models import AuditCheckpoint, AuditEvent, AuditTreeState
from bastion.audit.notary import notary_of
from bastion.audit.tree import AuditLog, origin_of, seal_of
from bastion.cli import app as cli
from bastion.clock import FrozenClock
from bastion.db import open_database, transaction
from bastion.instance import initialise
from bastion.logging import configure_logging
from bastion.secrets import open_keyrings
from bastion.security.merkle import Frontier
from bastion.settings import Settings, load_settings
from databases import PG_SKIP, admin, sibling
from factories.audit import write_events

EVENTS = 100_000
CHUNK = 10_000  # a checkpoint after each: ten of them, in the database and in files
runner = CliRunner()


@dataclass
class Log:
    settings: Settings
    data: Path
    checkpoint_dir: Path
    sql: list[str]  # the database's own command-line client
    sqlite: bool
    verify_seconds: float = 0.0

    def run_sql(self, statements: str) -> str:
        if self.sqlite:
            # The attacker first removes what stops the application from rewriting history.
            statements = (
                "DROP TRIGGER IF EXISTS audit_events_no_update; DROP TRIGGER IF EXISTS audit_events_no_delete; "
                + statements
            )
        else:
            statements = "ALTER TABLE audit_events DISABLE TRIGGER USER; " + statements
        done = subprocess.run([*self.sql, statements], capture_output=True, text=True, timeout=120, check=True)
        return done.stdout.strip()

    def verify(self, *args: str) -> tuple[int, list[str]]:
        started = time.perf_counter()
        result = runner.invoke(cli, ["audit", "verify", "--data-dir", str(self.data), *args])
        self.verify_seconds = time.perf_counter() - started
        lines = result.stdout.strip().splitlines()
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert result.exit_code in {0, 1}, (result.exit_code, result.stdout, result.stderr)
        return result.exit_code, lines


def _sql_client(settings: Settings) -> tuple[list[str], bool]:
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        return ["sqlite3", url.split("///", 1)[1]], True
    return ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-At", url.replace("postgresql+asyncpg", "postgresql"), "-c"], False


async def _build(settings: Settings, clock: FrozenClock) -> None:
    db = open_database(settings.sqlalchemy_url)
    keys = open_keyrings(settings)
    from bastion.audit.sinks import sinks_of

    log = AuditLog(settings, db, clock, keys.hmac, notary_of(keys, origin_of(settings)), sinks=sinks_of(settings))
    try:
        for _ in range(EVENTS // CHUNK):
            await write_events(db, clock, CHUNK)
            clock.advance(seconds=60)  # the log spans ten minutes
            await log.sequence_now()
            await log.checkpoint_now()
        await log.ship_pending()
    finally:
        await db.close()


ORIGIN = "tamper.example/audit"


@dataclass
class Seeded:
    """The log as built: its data dir, its shipped files, and its PostgreSQL database (None: SQLite)."""

    data: Path
    checkpoint_dir: Path
    base_url: str | None = None
    database: str | None = None


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    root = tmp_path_factory.mktemp("seeded")
    built = Seeded(root / "data", root / "shipped")
    overrides: dict[str, Any] = {"audit": {"checkpoint_dir": str(built.checkpoint_dir), "origin": ORIGIN}}
    if request.param == "postgresql":
        built.base_url = os.environ.get("BASTION_TEST_DATABASE_URL")
        if not built.base_url:
            pytest.skip(PG_SKIP)
        built.database = f"bastion_seeded_{uuid.uuid4().hex[:12]}"
        admin(built.base_url, f'CREATE DATABASE "{built.database}"')
        overrides["database_url"] = sibling(built.base_url, built.database)
    try:
        settings = load_settings(built.data, **overrides)
        initialise(settings)
        configure_logging("warning")  # 100,000 audit log lines would only fill the capture
        asyncio.run(_build(settings, FrozenClock()))
        yield built
    finally:
        if built.base_url and built.database:
            admin(built.base_url, f'DROP DATABASE IF EXISTS "{built.database}" WITH (FORCE)')


@pytest.fixture
def log(seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Log]:
    """A copy of the seeded log, for this test alone to tamper with."""
    data, checkpoint_dir = tmp_path / "data", tmp_path / "shipped"
    shutil.copytree(seeded.data, data)  # copy2: the keys keep their private modes
    shutil.copytree(seeded.checkpoint_dir, checkpoint_dir)
    overrides: dict[str, Any] = {"audit": {"checkpoint_dir": str(checkpoint_dir), "origin": ORIGIN}}
    # The command line reads the same instance from its environment.
    monkeypatch.setenv("BASTION_AUDIT__CHECKPOINT_DIR", str(checkpoint_dir))
    monkeypatch.setenv("BASTION_AUDIT__ORIGIN", ORIGIN)
    copy = None
    if seeded.base_url and seeded.database:
        copy = f"bastion_test_{uuid.uuid4().hex[:12]}"
        admin(seeded.base_url, f'CREATE DATABASE "{copy}" TEMPLATE "{seeded.database}"')
        overrides["database_url"] = sibling(seeded.base_url, copy)
        monkeypatch.setenv("BASTION_DATABASE_URL", overrides["database_url"])
    try:
        configure_logging("warning")
        settings = load_settings(data, **overrides)
        sql, sqlite = _sql_client(settings)
        yield Log(settings, settings.data_dir, checkpoint_dir, sql, sqlite)
    finally:
        if seeded.base_url and copy:
            admin(seeded.base_url, f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')


def _one(log: Log, query: str) -> str:
    return log.run_sql(query).splitlines()[-1]


def test_any_one_altered_deleted_inserted_or_reordered_event_of_100000_is_named(log: Log) -> None:
    code, lines = log.verify()
    assert code == 0, lines
    assert lines[-1] == "intact"
    assert f"events: {EVENTS} (sequenced {EVENTS}" in lines[0]
    assert "checkpoints: 10 in the database, 10 shipped files" in lines[1]
    print(f"verify of {EVENTS} events: {log.verify_seconds:.2f} s")  # the figure the report quotes
    assert len(list(log.checkpoint_dir.glob("*.checkpoint"))) == EVENTS // CHUNK

    target = int(_one(log, "SELECT id FROM audit_events WHERE seq = 54321"))
    save = f"CREATE TABLE saved AS SELECT * FROM audit_events WHERE id = {target}; "
    restore = (
        f"DELETE FROM audit_events WHERE id = {target}; INSERT INTO audit_events SELECT * FROM saved; DROP TABLE saved;"
    )

    # Altered: one field of one event.
    log.run_sql(save + f"UPDATE audit_events SET outcome = 'denied' WHERE id = {target};")
    code, lines = log.verify()
    assert code == 1
    assert lines[-1] == str(target)
    assert any("TAMPERED altered" in line for line in lines)
    log.run_sql(restore)

    # Altered in the personal fields (the address), which only the salted hash commits to.
    log.run_sql(save + f"UPDATE audit_events SET ip = '192.0.2.66' WHERE id = {target};")
    code, lines = log.verify()
    assert (code, lines[-1]) == (1, str(target))
    log.run_sql(restore)

    # Deleted: the row right after the gap is named, a row that exists (ids have gaps on
    # PostgreSQL, so the deleted one's id is never guessed from its neighbour's).
    after = int(_one(log, "SELECT id FROM audit_events WHERE seq = 54322"))
    log.run_sql(save + f"DELETE FROM audit_events WHERE id = {target};")
    code, lines = log.verify()
    assert (code, lines[-1]) == (1, str(after))
    assert any("TAMPERED deleted" in line for line in lines)
    log.run_sql("INSERT INTO audit_events SELECT * FROM saved; DROP TABLE saved;")

    # Deleted: the newest event (no gap after it; the tree and checkpoints count it).
    # Nothing follows it, so the last row kept is named.
    last = int(_one(log, f"SELECT id FROM audit_events WHERE seq = {EVENTS - 1}"))
    kept = int(_one(log, f"SELECT id FROM audit_events WHERE seq = {EVENTS - 2}"))
    log.run_sql(
        f"CREATE TABLE saved AS SELECT * FROM audit_events WHERE id = {last}; "
        f"DELETE FROM audit_events WHERE id = {last};"
    )
    code, lines = log.verify()
    assert (code, lines[-1]) == (1, str(kept))
    log.run_sql("INSERT INTO audit_events SELECT * FROM saved; DROP TABLE saved;")

    # Inserted into the past, as the sequencer would never take it.
    at = _one(log, "SELECT at FROM audit_events WHERE seq = 500")
    log.run_sql(
        f"INSERT INTO audit_events (at, tag, outcome, details) VALUES ('{at}', 'admin:user:role', 'success', '{{}}');"
    )
    inserted = int(_one(log, "SELECT max(id) FROM audit_events"))
    code, lines = log.verify()
    assert (code, lines[-1]) == (1, str(inserted))
    assert any("TAMPERED inserted" in line for line in lines)
    # Inserted with a place in the tree claimed: no seal can be made without the key.
    log.run_sql(f"UPDATE audit_events SET seq = {EVENTS}, seal = 'k:00' WHERE id = {inserted};")
    code, lines = log.verify()
    assert (code, lines[-1]) == (1, str(inserted))
    log.run_sql(f"DELETE FROM audit_events WHERE id = {inserted};")

    # Reordered: two neighbours swap places.
    seq = 54321
    following = int(_one(log, f"SELECT id FROM audit_events WHERE seq = {seq + 1}"))
    swap = (
        f"UPDATE audit_events SET seq = -1 WHERE id = {target}; "
        f"UPDATE audit_events SET seq = {{a}} WHERE id = {following}; "
        f"UPDATE audit_events SET seq = {{b}} WHERE id = {target};"
    )
    log.run_sql(swap.format(a=seq, b=seq + 1))
    code, lines = log.verify()
    assert code == 1
    assert lines[-1] in {str(target), str(following)}
    assert any("TAMPERED reordered" in line for line in lines)
    log.run_sql(swap.format(a=seq + 1, b=seq))

    code, lines = log.verify()
    assert (code, lines[-1]) == (0, "intact")


async def _rewrite(settings: Settings, target: int) -> int:
    """The worst case: an attacker holding the database AND the keystore rebuilds the
    table around a changed event: its leaf, every seal, the tree, and the database's
    checkpoints re-signed. Returns the id of the event at seq 50,000."""
    db = open_database(settings.sqlalchemy_url)
    keys = open_keyrings(settings)
    try:

        def unguard(connection: sa.Connection) -> None:
            if connection.dialect.name == "sqlite":
                connection.exec_driver_sql("DROP TRIGGER IF EXISTS audit_events_no_update")
            else:
                connection.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER USER")

        await db.run_sync(unguard)
        row = await db.one(sa.select(AuditEvent).where(AuditEvent.id == target))
        personal = personal_hash(row.personal_salt, row.actor_id, row.subject_id, row.ip, row.details)
        leaf = leaf_of(row.at, "admin:user:role", row.outcome, row.request_id, personal)
        async with transaction(db) as tx:
            await tx.execute(
                sa.update(AuditEvent)
                .where(AuditEvent.id == target)
                .values(tag="admin:user:role", leaf_hash=leaf, seal=seal_of(keys.hmac, row.seq, target, leaf))
            )
        leaves = [bytes(r.leaf_hash) for r in await db.all(sa.select(AuditEvent.leaf_hash).order_by(AuditEvent.seq))]
        frontier = Frontier()
        notary = notary_of(keys, origin_of(settings))
        from bastion.security.notes import checkpoint_body

        notes: list[dict[str, Any]] = []
        for leaf_ in leaves:
            frontier.append(leaf_)
            if frontier.size % CHUNK == 0:
                kid, note = notary.sign(checkpoint_body(origin_of(settings), frontier.size, frontier.root()))
                notes.append({"size": frontier.size, "root_hash": frontier.root(), "note": note, "key_id": kid})
        async with transaction(db) as tx:
            await tx.execute(
                sa.update(AuditTreeState).values(
                    size=frontier.size, frontier=frontier.to_bytes(), root_hash=frontier.root()
                )
            )
            await tx.execute(sa.delete(AuditCheckpoint))
            for note in notes:
                await tx.execute(sa.insert(AuditCheckpoint).values(at=dt.datetime.now(dt.UTC), **note))
        return int(await db.value(sa.select(AuditEvent.id).where(AuditEvent.seq == 50_000)))
    finally:
        await db.close()


def test_a_rewrite_of_the_whole_table_is_caught_by_the_shipped_checkpoints(
    log: Log, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = int(_one(log, "SELECT id FROM audit_events WHERE seq = 54321"))
    first_uncovered = asyncio.run(_rewrite(log.settings, target))
    code, lines = log.verify()
    assert code == 1
    assert lines[-1] == str(first_uncovered)  # the first event after the last checkpoint that still matches
    assert any("TAMPERED rewritten" in line and ".checkpoint" in line for line in lines)
    # The database alone now agrees with itself: the shipped files are what caught it.
    monkeypatch.setenv("BASTION_AUDIT__CHECKPOINT_DIR", str(tmp_path / "elsewhere"))
    code, lines = log.verify()
    assert (code, lines[-1]) == (0, "intact")
    # And a copy of the files kept elsewhere, given explicitly, catches it too.
    code, lines = log.verify("--checkpoints", str(log.checkpoint_dir))
    assert (code, lines[-1]) == (1, str(first_uncovered))
