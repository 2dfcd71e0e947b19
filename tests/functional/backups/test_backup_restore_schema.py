"""Restoring across schema versions: an older backup is migrated forward after its tables are checked;
a backup from a newer Bastion is refused, leaving nothing behind."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bastion.instance
from bastion.backups.create import create_backup
from bastion.cli import app as cli
from bastion.instance import initialise
from bastion.migrations import head_revision, upgrade
from bastion.secrets import open_keyrings
from bastion.security.age import new_identity
from bastion.settings import Settings, load_settings

IDENTITY, RECIPIENT = new_identity()
runner = CliRunner()


def revision_of(database: Path) -> str:
    with closing(sqlite3.connect(database)) as connection:
        return str(connection.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def tables_of(database: Path) -> set[str]:
    with closing(sqlite3.connect(database)) as connection:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


@pytest.fixture
def old_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A scratch SQLite instance migrated to 0008 only (before user_keys and rotation_notices)."""
    with monkeypatch.context() as patched:
        patched.setattr(bastion.instance, "upgrade", lambda url: upgrade(url, "0008"))
        settings = load_settings(tmp_path / "old", backups={"recipients": [RECIPIENT]})
        initialise(settings)
    assert revision_of(settings.data_dir / "bastion.db") == "0008"
    assert "user_keys" not in tables_of(settings.data_dir / "bastion.db")
    return settings


def restore(backup: Path, target: Path, tmp_path: Path, settings: Settings) -> tuple[int, str, str]:
    keys, identity = tmp_path / "keys.json", tmp_path / "identity.txt"
    if not keys.exists():
        assert (
            runner.invoke(
                cli, ["keys", "export-public", "--out", str(keys), "--data-dir", str(settings.data_dir)]
            ).exit_code
            == 0
        )
        identity.write_text(IDENTITY + "\n")
    result = runner.invoke(
        cli,
        ["backup", "restore", str(backup), "--identity", str(identity), "--data-dir", str(target), "--key", str(keys)],
    )
    return result.exit_code, result.stdout, result.stderr


def test_an_older_backup_is_migrated_forward(old_instance: Settings, tmp_path: Path) -> None:
    created = asyncio.run(create_backup(old_instance, open_keyrings(old_instance)))
    assert created.manifest.schema_revision == "0008"
    assert created.path is not None
    target = tmp_path / "restored"
    code, stdout, stderr = restore(created.path, target, tmp_path, old_instance)
    assert code == 0, stderr
    assert f"schema 0008 → {head_revision()}" in stdout
    assert revision_of(target / "bastion.db") == head_revision()
    assert {"user_keys", "rotation_notices"} <= tables_of(target / "bastion.db")


def test_a_backup_from_a_newer_bastion_is_refused(old_instance: Settings, tmp_path: Path) -> None:
    database = old_instance.data_dir / "bastion.db"
    with closing(sqlite3.connect(database)) as connection, connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    created = asyncio.run(create_backup(old_instance, open_keyrings(old_instance)))
    assert created.manifest.schema_revision == "9999"
    assert created.path is not None
    target = tmp_path / "restored"
    code, _, stderr = restore(created.path, target, tmp_path, old_instance)
    assert code == 2
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "newer" in errors[0]
    assert not target.exists()
    assert not list(tmp_path.glob(".restored.restoring-*"))
