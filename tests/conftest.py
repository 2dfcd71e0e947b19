"""Shared fixtures: a fresh data directory per test, on SQLite and, when
``BASTION_TEST_DATABASE_URL`` is set, on a PostgreSQL database created for
the test and dropped after it; and the one ``harness`` (tests/harness.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bastion.app import create_app
from bastion.clock import FrozenClock
from bastion.instance import initialise
from bastion.logging import configure_logging
from bastion.settings import Settings, load_settings
from harness import CHEAP_ARGON2, Harness, open_harness
from private_redis import PrivateRedis

PG_SKIP = "BASTION_TEST_DATABASE_URL not set: PostgreSQL tests need a server (.ci/run sets it)"
REDIS_SKIP = "BASTION_TEST_REDIS_URL not set: Redis tests need a server (.ci/run sets it)"


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(autouse=True)
def _logging() -> None:
    # As in a served process: structlog through the stdlib, so caplog sees it.
    # Per test, because CLI tests reconfigure logging onto their own streams.
    configure_logging("info")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own BASTION_* settings must not leak into the suite.
    for name in list(os.environ):
        if name.startswith("BASTION_") and not name.startswith("BASTION_TEST_"):
            monkeypatch.delenv(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """``None`` means the embedded SQLite file in the data dir."""
    if request.param == "sqlite":
        yield None
        return
    base = os.environ.get("BASTION_TEST_DATABASE_URL")
    if not base:
        pytest.skip(PG_SKIP)
    name = f"bastion_test_{uuid.uuid4().hex[:12]}"
    run_sync(_admin(base, f'CREATE DATABASE "{name}"'))
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        run_sync(_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("BASTION_TEST_REDIS_URL")
    if not url:
        pytest.skip(REDIS_SKIP)
    return url


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str | None) -> SettingsFactory:
    """Initialised settings in a fresh data dir; keyword arguments override settings."""

    def make(**overrides: Any) -> Settings:
        if database_url is not None:
            overrides.setdefault("database_url", database_url)
        settings = load_settings(tmp_path / "data", **overrides)
        initialise(settings)
        return settings

    return make


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as client,
    ):
        yield client


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    """Settings of the harness's app beyond cheap hashing; a directory's conftest overrides this."""
    return {}


@pytest.fixture
async def harness(
    make_settings: SettingsFactory, clock: FrozenClock, harness_settings: dict[str, Any]
) -> AsyncIterator[Harness]:
    async with open_harness(make_settings(**{"passwords": CHEAP_ARGON2, **harness_settings}), clock) as opened:
        yield opened


@pytest.fixture
def admin_client(harness: Harness) -> httpx.AsyncClient:
    """The harness's app through the admin listener, over mTLS from loopback."""
    assert harness.admin_client is not None
    return harness.admin_client


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own on a spare port, for tests that stop and start Redis."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
