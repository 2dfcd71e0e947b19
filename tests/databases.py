"""The test databases on the PostgreSQL server that ``BASTION_TEST_DATABASE_URL``
names: statements on its admin connection, and a sibling database's URL. Shared
by tests/conftest.py and the tests that keep a database for a whole module."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

PG_SKIP = "BASTION_TEST_DATABASE_URL not set: PostgreSQL tests need a server (.ci/run sets it)"


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def admin(url: str, statement: str) -> None:
    """One statement (CREATE/DROP DATABASE) on the server of ``url``, from sync code."""
    run_sync(_admin(url, statement))


def sibling(url: str, name: str) -> str:
    """The URL of database ``name`` on the same server as ``url``."""
    return url.rsplit("/", 1)[0] + "/" + name
