"""`kill -9` during `bastion backup create` (a real process, a real SQLite file): whatever it
leaves, `backup list` shows nothing complete, and the next backup is whole."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from bastion.backups.archive import BackupInfo, list_backups
from bastion.backups.create import create_backup, trusted_vkeys
from bastion.backups.destinations import LocalDestination, local_backup_dir
from bastion.backups.verify import verify_backup
from bastion.secrets import open_keyrings
from bastion.settings import Settings
from factories.backups import IDENTITY, RECIPIENT

# Big enough that each stage takes a while (about 24 MB of incompressible rows).
FILLER_ROWS = 24


@pytest.fixture
def database_url() -> None:
    """The embedded SQLite file only: the kill is about the backup file, not the database."""
    return


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "BASTION_DATA_DIR": str(settings.data_dir),
        "BASTION_BACKUPS__RECIPIENTS": json.dumps([RECIPIENT]),
    }


def _fill(settings: Settings) -> None:
    connection = sqlite3.connect(settings.data_dir / "bastion.db")
    with connection:
        connection.execute("CREATE TABLE filler (id INTEGER PRIMARY KEY, data BLOB)")
        connection.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO filler (id, data) SELECT i, randomblob(1000000) FROM n",
            (FILLER_ROWS,),
        )
    connection.close()


def _kill_when(settings: Settings, seen: Callable[[], bool]) -> None:
    """Start a backup, and SIGKILL it as soon as ``seen()`` (polled every millisecond)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bastion", "backup", "create"],
        env=_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    try:
        while not seen():
            assert process.poll() is None, "the backup ended before the moment to kill it"
            assert time.monotonic() < deadline
            time.sleep(0.001)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL


def _listed(settings: Settings) -> list[BackupInfo]:
    """What `backup list` shows (its function, in this process: a process start costs seconds here)."""
    vkeys = trusted_vkeys(settings, open_keyrings(settings))
    return list_backups(LocalDestination(local_backup_dir(settings)), vkeys)


def _complete(settings: Settings) -> list[str]:
    return [info.name for info in _listed(settings) if info.complete]


def test_kill_9_during_a_backup_leaves_nothing_complete(settings: Settings) -> None:
    """V14.2.4: a backup killed while snapshotting or while writing the encrypted file is never
    listed as complete; the database is untouched and the next backup is whole and verifies."""
    _fill(settings)
    backups = local_backup_dir(settings)

    def staging() -> bool:
        return any(p.name.startswith(".backup-") for p in settings.data_dir.iterdir())

    def partial() -> bool:
        return backups.is_dir() and any(p.name.endswith(".partial") for p in backups.iterdir())

    _kill_when(settings, staging)
    assert _complete(settings) == []
    _kill_when(settings, partial)
    assert _complete(settings) == []
    assert [info.reason for info in _listed(settings)] == ["being written"]

    ready = settings.model_copy(update={"backups": settings.backups.model_copy(update={"recipients": [RECIPIENT]})})
    keys = open_keyrings(ready)
    made = asyncio.run(create_backup(ready, keys))
    assert made.path is not None
    assert _complete(settings) == [made.path.name]
    manifest = asyncio.run(verify_backup(made.path, trusted_vkeys(ready, keys), identity_text=IDENTITY))
    assert manifest.tables["filler"].rows == FILLER_ROWS
    connection = sqlite3.connect(settings.data_dir / "bastion.db")
    assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert connection.execute("SELECT count(*) FROM filler").fetchone() == (FILLER_ROWS,)
    connection.close()
