"""`bastion backup create | verify | list` on a serving instance, on SQLite and PostgreSQL: a backup
taken during a stream of creates holds every acknowledged write; Debian's `age` decrypts it; a
flipped byte anywhere is refused with one line; the exit codes of the contract."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import sqlite3
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
import zstandard
from typer.testing import CliRunner

from bastion.backups.create import CreatedBackup, create_backup, trusted_vkeys
from bastion.backups.destinations import local_backup_dir
from bastion.backups.errors import BackupUnavailable
from bastion.backups.verify import verify_backup
from bastion.secrets import open_keyrings
from factories.backups import IDENTITY, RECIPIENT
from harness import DataHarness, Harness

pytestmark = pytest.mark.clock_now  # the command line dates its audit events by the real clock
runner = CliRunner()
AGE = shutil.which("age") or "age"
PG_RESTORE = shutil.which("pg_restore") or "pg_restore"


@pytest.fixture(autouse=True)
def _cli_environment(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads bastion.toml and the environment: give it the harness's database and recipients."""
    monkeypatch.setenv("BASTION_DATABASE_URL", harness.settings.sqlalchemy_url)
    monkeypatch.setenv("BASTION_BACKUPS__RECIPIENTS", json.dumps([RECIPIENT]))


@pytest.fixture
async def data(harness: Harness) -> DataHarness:
    return await DataHarness.of(harness, "alice@example.com", "bob@example.com")


async def bastion(harness: Harness, *args: str) -> tuple[int, str, str]:
    """The command, run beside the serving app (in a thread: it has its own event loop)."""
    from bastion.cli import app

    result = await asyncio.to_thread(runner.invoke, app, ["--data-dir", str(harness.settings.data_dir), *args])
    return result.exit_code, result.stdout, result.stderr


def identity_file(tmp_path: Path, text: str = IDENTITY) -> Path:
    path = tmp_path / "identity.txt"
    path.write_text(text + "\n")
    return path


def _untar(plain: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(zstandard.ZstdDecompressor().decompressobj().decompress(plain))) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}  # type: ignore[union-attr]


def _ids_in_dump(dump: bytes, table: str) -> set[str]:
    """Record ids in a pg_dump -Fc file's COPY data of ``table`` (pg_restore to SQL text, no server)."""
    text = subprocess.run(
        [PG_RESTORE, "--data-only", f"--table={table}", "--file=-"], input=dump, capture_output=True, check=True
    ).stdout.decode()
    block = text.split(f"COPY public.{table} ", 1)[1].split("\n\\.\n", 1)[0]
    return {uuid.UUID(line.split("\t", 1)[0]).hex for line in block.splitlines()[1:]}


def _ids_in_sqlite(path: Path, table: str) -> set[str]:
    connection = sqlite3.connect(path)
    try:
        return {uuid.UUID(str(row[0])).hex for row in connection.execute(f'SELECT id FROM "{table}"')}  # noqa: S608
    finally:
        connection.close()


async def test_a_backup_during_a_stream_of_creates_holds_every_acknowledged_write(
    data: DataHarness, tmp_path: Path
) -> None:
    """V14.2.4: a backup taken while writes go on is consistent (verify with the identity passes,
    every table matches its digest) and holds every create acknowledged before it began."""
    acknowledged: list[str] = []
    stop = asyncio.Event()

    async def writer(who: dict[str, object]) -> None:
        while not stop.is_set():
            note = await data.create(who, "notes", {"title": f"n{len(acknowledged)}", "secret": "s3cret"})
            acknowledged.append(note["id"])

    writers = [asyncio.create_task(writer(who)) for who in (data.alice, data.bob, data.alice)]
    while len(acknowledged) < 30:  # noqa: ASYNC110 (waits for the writers' progress, not for time)
        await asyncio.sleep(0)
    before = {uuid.UUID(i).hex for i in acknowledged}
    settings = data.settings
    keys = open_keyrings(settings)
    created: CreatedBackup = await create_backup(settings, keys)
    during = len(acknowledged) - len(before)
    stop.set()
    await asyncio.gather(*writers)
    assert during > 0, "the writes did not go on during the backup"
    assert created.path is not None
    vkeys = trusted_vkeys(settings, keys)
    scratch = settings.sqlalchemy_url if settings.database_url is not None else None
    manifest = await verify_backup(created.path, vkeys, identity_text=IDENTITY, scratch_url=scratch)
    assert manifest.tables["c_notes"].rows >= len(before)
    plain = await asyncio.to_thread(
        subprocess.run, [AGE, "-d", "-i", str(identity_file(tmp_path)), str(created.path)], capture_output=True
    )
    parts = _untar(plain.stdout)
    if manifest.database == "sqlite":
        (tmp_path / "restored.db").write_bytes(parts["bastion.db"])
        held = _ids_in_sqlite(tmp_path / "restored.db", "c_notes")
    else:
        held = _ids_in_dump(parts["database.dump"], "c_notes")
    assert before <= held
    assert len(held) == manifest.tables["c_notes"].rows


async def test_debian_age_decrypts_a_backup_and_the_database_inside_opens(harness: Harness, tmp_path: Path) -> None:
    """V14.2.4: the backup is a plain age file, decrypted by an independent implementation
    (Debian's `age -d -i`); the database, keystore and configuration are inside, the master key is not."""
    assert shutil.which("age"), "Debian's age is needed (.ci/run installs it)"
    code, out, err = await bastion(harness, "backup", "create")
    assert code == 0, err
    path = Path(out.strip().splitlines()[-1])
    assert path.parent == local_backup_dir(harness.settings)
    plain = await asyncio.to_thread(
        subprocess.run,
        [AGE, "-d", "-i", str(identity_file(tmp_path)), str(path)],
        capture_output=True,
        check=True,
    )
    parts = _untar(plain.stdout)
    assert {"manifest.json", "manifest.sig", "bastion.toml", "keys/notary.json", "keys/encryption.json"} <= set(parts)
    master = harness.settings.master_key_source()[0]
    assert master is not None
    assert not any(master.strip().encode() in data for data in parts.values())
    manifest = json.loads(parts["manifest.json"])
    assert manifest["format"] == "bastion-backup/v1"
    assert manifest["recipients"] == [RECIPIENT]
    assert set(manifest["parts"]) == set(parts) - {"manifest.json", "manifest.sig"}
    if manifest["database"] == "sqlite":
        (tmp_path / "b.db").write_bytes(parts["bastion.db"])
        connection = sqlite3.connect(tmp_path / "b.db")
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert connection.execute("SELECT count(*) FROM users").fetchone()[0] == manifest["tables"]["users"]["rows"]
        connection.close()
    else:
        listing = await asyncio.to_thread(
            subprocess.run, [PG_RESTORE, "--list"], input=parts["database.dump"], capture_output=True, check=True
        )
        assert b"TABLE DATA public users" in listing.stdout
    code, out, _ = await bastion(harness, "backup", "list", "--json")
    assert code == 0
    assert [(b["name"], b["complete"]) for b in json.loads(out)["backups"]] == [(path.name, True)]


async def test_a_master_key_written_in_bastion_toml_refuses_the_backup(harness: Harness) -> None:
    """V14.2.4 / V13.3.1: a bastion.toml that holds ``master_key`` would put the master key into
    the backup beside the keystore it unwraps; the backup is refused with one line and nothing is written."""
    config = harness.settings.config_file
    master = harness.settings.master_key_source()[0]
    assert master is not None
    # At the top: after a [table] header the key would belong to that table.
    config.write_text(f'master_key = "{master}"\n' + (config.read_text() if config.is_file() else ""))
    with pytest.raises(BackupUnavailable, match="holds master_key"):
        await create_backup(harness.settings, open_keyrings(harness.settings))
    code, _, err = await bastion(harness, "backup", "create")
    assert code == 2
    assert "master_key" in err
    assert len(err.strip().splitlines()) == 1
    assert not any(local_backup_dir(harness.settings).glob("bastion-*"))
    assert not any(harness.settings.data_dir.glob(".backup-*"))


async def test_a_backup_carries_the_ledger_line_an_erasure_committed_but_never_appended(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """V14.2.7: an erasure whose ledger append never ran (the process died after the commit) is in
    the next backup's ledger and beside the backups all the same: ``backup create`` appends the
    lines the erasures committed before it copies the ledger."""
    from bastion.audit import Origin
    from bastion.privacy import erasure
    from bastion.privacy.ledger import LEDGER_NAME, read_ledger, recorded_lines

    user = await harness.user("gone@example.com")
    monkeypatch.setattr(erasure, "write_lines", lambda settings, lines: 0)
    await harness.app.state.eraser.erase(user.id, origin=Origin.cli(), actor_id=None, via="cli")
    monkeypatch.undo()
    [line] = await recorded_lines(harness.app.state.db)
    assert not (harness.settings.data_dir / LEDGER_NAME).exists()
    created = await create_backup(harness.settings, open_keyrings(harness.settings))
    assert created.path is not None
    assert (harness.settings.data_dir / LEDGER_NAME).read_text() == line + "\n"
    beside = (created.path.parent / LEDGER_NAME).read_bytes()
    assert [entry.line for entry in read_ledger(beside, open_keyrings(harness.settings))] == [line]
