"""Readiness and writes when the database goes away underneath a running server (issue 11, item 12)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from bastion.settings import Settings

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

REGISTER = {"email": "new@example.com", "password": "a long enough passphrase 42"}


def _database_file(settings: Settings) -> Path:
    return settings.data_dir / "bastion.db"


def _delete(database: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)


async def _assert_gone(client: httpx.AsyncClient) -> None:
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    write = await client.post("/api/v1/auth/register", json=REGISTER)
    assert write.status_code == 503
    assert write.headers["content-type"] == "application/problem+json"
    # Liveness is not readiness: the process still answers.
    assert (await client.get("/healthz")).status_code == 200


async def test_a_deleted_database_file_is_not_ready_and_refuses_writes(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """SQLite would acknowledge writes into the unlinked file, lost at the next start."""
    assert (await client.get("/readyz")).status_code == 200
    _delete(_database_file(settings))
    await _assert_gone(client)


async def test_a_replaced_database_file_is_not_ready(client: httpx.AsyncClient, settings: Settings) -> None:
    assert (await client.get("/readyz")).status_code == 200
    path = _database_file(settings)
    copy = path.with_name("copy.db")
    copy.write_bytes(path.read_bytes())
    os.replace(copy, path)  # same content, another file: writes would go to the old one
    await _assert_gone(client)
