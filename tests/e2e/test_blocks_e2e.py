"""A block added by another process while a real server runs: every worker
refuses the address at its next request within 1 s, and serves it again
once the block is removed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serving import Served, clean_env, serve

pytestmark = pytest.mark.e2e


def _bastion(served: Served, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        env=clean_env(BASTION_DATA_DIR=str(served.data), **env),
        capture_output=True,
        timeout=120,
        check=False,
    )


def _statuses(served: Served, n: int) -> list[int]:
    # New connections, so the requests spread over the workers.
    statuses = []
    for _ in range(n):
        with served.client(timeout=5) as client:
            statuses.append(client.get("/healthz").status_code)
    return statuses


def test_a_block_reaches_every_worker_within_a_second(tmp_path: Path, database_url: str | None) -> None:
    """V2.4.1, V6.3.1 with the issue's bound: `bastion
    block add 127.0.0.1 --for 1m` in another process; from then every worker
    refuses this client within 1 s; `block remove` lets it in again."""
    # database_url (tests/conftest.py): None is SQLite, else a fresh PostgreSQL database.
    env = {} if database_url is None else {"BASTION_DATABASE_URL": database_url}
    redis = os.environ.get("BASTION_TEST_REDIS_URL")
    if redis:  # two workers need shared throttle counters
        env |= {"BASTION_SERVER__WORKERS": "2", "BASTION_REDIS_URL": redis}
    with serve(tmp_path / "data", **env) as served:
        assert _statuses(served, 6) == [200] * 6
        added = _bastion(served, "block", "add", "127.0.0.1", "--for", "1m", "--reason", "e2e", env=env)
        assert added.returncode == 0, added.stderr
        _until(served, 403)
        removed = _bastion(served, "block", "remove", "127.0.0.1", env=env)
        assert removed.returncode == 0, removed.stderr
        _until(served, 200)

        # The bound itself, timed from the commit: this test process adds the block.
        committed = asyncio.run(_add_block(served.data, database_url))
        latency = _until(served, 403, since=committed)
        assert latency < 1.0, f"every worker refused after {latency:.3f} s"
        assert _statuses(served, 8) == [403] * 8
        print(f"block latency {latency:.3f} s from commit to every worker refusing")


def _until(served: Served, status: int, since: float | None = None) -> float:
    """Poll until a run of fresh connections (so: every worker) all answer ``status``; seconds since ``since``."""
    started = time.monotonic() if since is None else since
    while _statuses(served, 6) != [status] * 6:
        assert time.monotonic() - started < 10, f"the workers never all answered {status}"
    return time.monotonic() - started


async def _add_block(data: Path, database_url: str | None) -> float:
    from bastion.clock import SystemClock
    from bastion.db import open_database, transaction
    from bastion.network.blocks import BlockList, parse_network
    from bastion.settings import load_settings

    overrides = {} if database_url is None else {"database_url": database_url}
    db = open_database(load_settings(data, **overrides).sqlalchemy_url)
    try:
        blocks = BlockList(db, SystemClock(), refresh=0.5)
        async with transaction(db) as tx:
            await blocks.add(tx, parse_network("127.0.0.1"), for_seconds=60, reason="e2e", source="manual")
        return time.monotonic()
    finally:
        await db.close()
