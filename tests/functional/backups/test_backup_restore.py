"""``bastion backup restore`` and ``backup drill`` through the command line, on both databases.

A backup taken while records are being created restores every write
acknowledged before the snapshot, onto a fresh data directory (and a fresh
PostgreSQL database), and the restored server serves them, encrypted
fields included; a backup of an older schema is migrated forward; a
non-empty target, a flipped bit or a swapped sidecar is refused with one
line and leaves the target as it was.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from bastion.backups.create import CreatedBackup, create_backup
from bastion.cli import app as cli
from bastion.clock import FrozenClock
from bastion.secrets import open_keyrings
from bastion.security.age import new_identity
from bastion.settings import Settings, load_settings
from factories.data import COLLECTIONS
from harness import CHEAP_ARGON2, Harness, open_harness

IDENTITY, RECIPIENT = new_identity()
pytestmark = pytest.mark.clock_now  # the command line dates its audit events by the real clock
runner = CliRunner()


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    return {"collections": COLLECTIONS, "backups": {"recipients": [RECIPIENT]}}


async def bastion(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The command line, in a thread (it runs its own event loop)."""
    result = await asyncio.to_thread(runner.invoke, cli, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def one_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def leftovers(directory: Path) -> list[Path]:
    """Staging directories a restore left behind."""
    return list(directory.glob(".*.restoring-*"))


def set_aside(directory: Path) -> list[Path]:
    """Data directories a restore --force moved aside."""
    return list(directory.glob("*.before-restore-*"))


def write_private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.fixture
def identity_file(tmp_path: Path) -> Path:
    return write_private(tmp_path / "identity.txt", IDENTITY + "\n")


async def public_keys(settings: Settings, tmp_path: Path) -> Path:
    out = tmp_path / "public-keys.json"
    code, _, stderr = await bastion("keys", "export-public", "--out", str(out), "--data-dir", str(settings.data_dir))
    assert code == 0, stderr
    return out


async def backup_of(settings: Settings) -> CreatedBackup:
    return await create_backup(settings, open_keyrings(settings))


@pytest.fixture
def restore_database(database_url: str | None) -> Iterator[dict[str, str]]:
    """The environment of a restore: for PostgreSQL, a new empty database to restore into."""
    if database_url is None:
        yield {}
        return
    name = f"bastion_restore_{uuid.uuid4().hex[:12]}"
    run_sync(_admin(database_url, f'CREATE DATABASE "{name}"'))
    try:
        yield {"BASTION_DATABASE_URL": database_url.rsplit("/", 1)[0] + "/" + name}
    finally:
        # The target, and whatever a restore left beside it (a previous database kept aside).
        for left in [*run_sync(_databases_beside(database_url, name)), name]:
            run_sync(_admin(database_url, f'DROP DATABASE IF EXISTS "{left}" WITH (FORCE)'))


def run_sync(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine from a sync fixture, in a thread of its own (a test's loop may be running)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _rows(url: str, statement: str) -> list[tuple[Any, ...]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return [tuple(row) for row in (await connection.exec_driver_sql(statement)).all()]
    finally:
        await engine.dispose()


async def _databases_beside(url: str, name: str) -> list[str]:
    """The databases whose name starts with ``name``'s first 30 characters, other than it."""
    # name: this module's own bastion_restore_<hex>, never outside input
    rows = await _rows(url, f"SELECT datname FROM pg_database WHERE datname LIKE '{name[:30]}%' ORDER BY datname")  # noqa: S608
    return [row[0] for row in rows if row[0] != name]


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(statement)
    finally:
        await engine.dispose()


async def erase_with_the_cli(harness: Harness, monkeypatch: pytest.MonkeyPatch, email: str) -> None:
    """``bastion user erase EMAIL`` on the harness's instance (its ledger line goes beside the backups)."""
    monkeypatch.setenv("BASTION_DATABASE_URL", harness.settings.sqlalchemy_url)
    code, _, stderr = await bastion("user", "erase", email, "--yes", "--data-dir", str(harness.settings.data_dir))
    assert code == 0, stderr
    monkeypatch.delenv("BASTION_DATABASE_URL")


def restored_settings(target: Path, original: Settings, env: dict[str, str]) -> Settings:
    """The restored instance as a server would load it: the original's master key (never in a backup)."""
    overrides: dict[str, Any] = {"master_key_file": original.data_dir / "master.key", "passwords": CHEAP_ARGON2}
    if "BASTION_DATABASE_URL" in env:
        overrides["database_url"] = env["BASTION_DATABASE_URL"]
    return load_settings(target, **overrides)


async def test_restore_of_a_backup_taken_during_creates_has_every_acknowledged_write(
    harness: Harness, tmp_path: Path, identity_file: Path, restore_database: dict[str, str]
) -> None:
    """A backup made while writes go on holds each write acknowledged before its snapshot; restored
    elsewhere, the server serves them, encrypted fields decrypted (ASVS V14.2.4: the integrity of
    sensitive data is verified, here every table against the signed manifest)."""
    alice = await harness.signed_in("alice@example.com")
    acknowledged: list[tuple[float, str]] = []
    stop, warmed_up = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        n = 0
        while not stop.is_set():
            record = await harness.create(alice, "notes", {"title": f"note {n}", "secret": f"s3cret-{n}"})
            acknowledged.append((time.monotonic(), record["id"]))
            n += 1
            if n == 20:
                warmed_up.set()

    writing = asyncio.create_task(writer())
    await warmed_up.wait()
    started = time.monotonic()
    created = await backup_of(harness.settings)
    stop.set()
    await writing
    # Every write acknowledged before the backup began must be there (a later one may be too),
    # and writes went on during it.
    before = [rid for at, rid in acknowledged if at < started]
    assert len(before) >= 20
    assert len(acknowledged) > len(before)

    keys = await public_keys(harness.settings, tmp_path)
    target = tmp_path / "restored"
    assert created.path is not None
    code, stdout, stderr = await bastion(
        "backup",
        "restore",
        str(created.path),
        "--identity",
        str(identity_file),
        "--data-dir",
        str(target),
        "--key",
        str(keys),
        env=restore_database,
    )
    assert code == 0, stderr
    assert f"restored {created.manifest.id} into {target}" in stdout
    assert not (target / "master.key").exists(), "the master key is never in a backup"
    assert (target / "keys").is_dir()
    assert not leftovers(tmp_path), "the staging directory is gone"

    restored = restored_settings(target, harness.settings, restore_database)
    async with open_harness(restored, FrozenClock(harness.clock.now())) as again:
        listed = set()
        for rid in before:
            response = await again.client.get(f"{again.records('notes')}/{rid}", headers=again.bearer(alice))
            assert response.status_code == 200, response.text
            assert response.json()["secret"].startswith("s3cret-")
            listed.add(rid)
    assert listed == set(before)


async def test_restore_refuses_a_non_empty_directory_and_a_flipped_bit(
    harness: Harness, tmp_path: Path, identity_file: Path, restore_database: dict[str, str]
) -> None:
    """One bit changed in the file or its sidecar, or keys from elsewhere: refused with one line, nothing
    written (ASVS V14.2.4: integrity verification of the data before it is used)."""
    alice = await harness.signed_in("alice@example.com")
    await harness.create(alice, "notes", {"title": "kept"})
    created = await backup_of(harness.settings)
    assert created.path is not None
    keys = await public_keys(harness.settings, tmp_path)
    restore = ("backup", "restore", "--identity", str(identity_file), "--key", str(keys))

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "precious.txt").write_text("mine")
    code, _, stderr = await bastion(*restore, str(created.path), "--data-dir", str(occupied), env=restore_database)
    assert code == 2
    assert "not empty" in one_error(stderr)
    assert [p.name for p in occupied.iterdir()] == ["precious.txt"]

    # One bit flipped in the middle of the file: refused before anything is written.
    flipped = tmp_path / "flipped" / created.path.name
    flipped.parent.mkdir()
    data = bytearray(created.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    sidecar = created.path.with_name(created.path.name + ".manifest")
    flipped.with_name(sidecar.name).write_bytes(sidecar.read_bytes())
    target = tmp_path / "target"
    code, _, stderr = await bastion(*restore, str(flipped), "--data-dir", str(target), env=restore_database)
    assert code == 1
    assert "SHA-256" in one_error(stderr)
    assert not target.exists()
    # Without its sidecar the archive's own checks catch it (age authenticates every chunk).
    flipped.with_name(sidecar.name).unlink()
    code, _, stderr = await bastion(*restore, str(flipped), "--data-dir", str(target), env=restore_database)
    assert code == 1
    one_error(stderr)
    assert not target.exists()
    assert not leftovers(tmp_path)

    # A sidecar flipped by one bit: its signature fails.
    bad = bytearray(sidecar.read_bytes())
    bad[40] ^= 0x01
    flipped.write_bytes(created.path.read_bytes())
    flipped.with_name(sidecar.name).write_bytes(bytes(bad))
    code, _, stderr = await bastion(*restore, str(flipped), "--data-dir", str(target), env=restore_database)
    assert code == 1
    one_error(stderr)
    assert not target.exists()

    # --force: the previous directory is kept aside, never deleted.
    code, _, stderr = await bastion(
        *restore, str(created.path), "--data-dir", str(occupied), "--force", env=restore_database
    )
    assert code == 0, stderr
    assert (occupied / "bastion.toml").exists()
    aside = set_aside(tmp_path)
    assert len(aside) == 1
    assert (aside[0] / "precious.txt").read_text() == "mine"
    if restore_database:
        # PostgreSQL: the database now holds the restored tables; another restore needs --force.
        code, _, stderr = await bastion(*restore, str(created.path), "--data-dir", str(target), env=restore_database)
        assert code == 2
        assert "holds" in one_error(stderr)
        assert not target.exists()

    # Another instance's keys (a key from elsewhere) verify nothing.
    code, _, stderr = await bastion(
        "backup",
        "restore",
        str(created.path),
        "--identity",
        str(identity_file),
        "--data-dir",
        str(target),
        env=restore_database,
    )
    assert code == 2
    assert "--key" in one_error(stderr)


async def test_an_erased_user_does_not_come_back_from_an_older_backup(
    harness: Harness,
    tmp_path: Path,
    identity_file: Path,
    restore_database: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backup taken before Alice's erasure, restored: she is erased again (the ledger beside the
    backups), and Bob's encrypted fields read back (ASVS V14.2.7: data deleted as required stays deleted)."""
    alice, bob = await harness.signed_in("alice@example.com"), await harness.signed_in("bob@example.com")
    await harness.create(alice, "notes", {"title": "alice's", "secret": "alice-secret"})
    kept = await harness.create(bob, "notes", {"title": "bob's", "secret": "bob-secret"})
    created = await backup_of(harness.settings)
    assert created.path is not None
    keys = await public_keys(harness.settings, tmp_path)

    await erase_with_the_cli(harness, monkeypatch, "alice@example.com")
    assert (created.path.parent / "erasure-ledger.jsonl").exists(), "the erasure's line went beside the backups"

    target = tmp_path / "restored"
    env = restore_database | {"BASTION_MASTER_KEY_FILE": str(harness.settings.data_dir / "master.key")}
    code, stdout, stderr = await bastion(
        "backup", "restore", str(created.path), "--identity", str(identity_file), "--data-dir", str(target),
        "--key", str(keys), env=env,
    )  # fmt: skip
    assert code == 0, stderr
    assert "1 erased user(s) removed again" in stdout
    assert (target / "erasure-ledger.jsonl").exists()

    restored = restored_settings(target, harness.settings, restore_database)
    async with open_harness(restored, FrozenClock(harness.clock.now())) as again:
        response = await again.client.get(f"{again.records('notes')}/{kept['id']}", headers=again.bearer(bob))
        assert response.status_code == 200, response.text
        assert response.json()["secret"] == "bob-secret"
        listed = await again.client.get(again.records("notes"), headers=again.bearer(alice))
        assert listed.status_code == 401, "alice's session came back"
        everything = await again.client.get(again.records("notes"), headers=again.bearer(bob))
        assert [r["title"] for r in everything.json()["items"]] == ["bob's"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_failed_restore_leaves_the_postgresql_database_as_it_was(
    harness: Harness,
    tmp_path: Path,
    identity_file: Path,
    restore_database: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL: the dump is loaded into a database beside the target and takes its name only when
    every step passed. A restore that fails after pg_restore (an erasure ledger to apply and no master
    key), or whose swap a session on the target blocks, leaves the target's own tables as they were and
    no database behind; one that succeeds keeps the previous database aside (ASVS V14.2.4)."""
    alice = await harness.signed_in("alice@example.com")
    await harness.create(alice, "notes", {"title": "alice's"})
    created = await backup_of(harness.settings)
    assert created.path is not None
    keys = await public_keys(harness.settings, tmp_path)
    await erase_with_the_cli(harness, monkeypatch, "alice@example.com")

    url = restore_database["BASTION_DATABASE_URL"]
    name = url.rsplit("/", 1)[1]
    await _admin(url, "CREATE TABLE precious (v text)")
    await _admin(url, "INSERT INTO precious VALUES ('mine')")
    restore = ("backup", "restore", str(created.path), "--identity", str(identity_file), "--key", str(keys))

    # The ledger holds Alice's erasure; without the master key it cannot be applied: refused
    # after the dump was loaded, compared and migrated.
    code, _, stderr = await bastion(*restore, "--data-dir", str(tmp_path / "a"), "--force", env=restore_database)
    assert code == 2
    assert "master key" in one_error(stderr)
    assert await _rows(url, "SELECT v FROM precious") == [("mine",)]
    assert await _rows(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(1,)]
    assert await _databases_beside(url, name) == [], "the staged database was dropped"
    assert not (tmp_path / "a").exists()

    # A session still open on the target (a server using it) blocks the swap without --force.
    await _admin(url, "DROP TABLE precious")
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")
            env = restore_database | {"BASTION_MASTER_KEY_FILE": str(harness.settings.data_dir / "master.key")}
            code, _, stderr = await bastion(*restore, "--data-dir", str(tmp_path / "b"), env=env)
            assert code == 2
            assert f"cannot set the database {name} aside" in one_error(stderr)
            assert await _databases_beside(url, name) == []
            assert not (tmp_path / "b").exists()
    finally:
        await engine.dispose()

    # Now it goes through: the target holds the restored tables, Alice erased again; with
    # --force over a database holding tables, the previous one is kept aside.
    code, stdout, stderr = await bastion(*restore, "--data-dir", str(tmp_path / "b"), env=env)
    assert code == 0, stderr
    assert "1 erased user(s) removed again" in stdout
    assert await _databases_beside(url, name) == [], "an empty target is not kept"
    await _admin(url, "CREATE TABLE precious (v text)")
    code, _, stderr = await bastion(*restore, "--data-dir", str(tmp_path / "c"), "--force", env=env)
    assert code == 0, stderr
    [aside] = await _databases_beside(url, name)
    assert f"the previous PostgreSQL database is now {aside}" in stderr
    assert "before_restore" in aside
    assert await _rows(url.rsplit("/", 1)[0] + "/" + aside, "SELECT count(*) FROM precious") == [(0,)]
    assert await _rows(url, "SELECT count(*) FROM users") == [(0,)], "Alice stays erased"
    assert await _rows(url, "SELECT count(*) FROM pg_tables WHERE tablename = 'precious'") == [(0,)]
