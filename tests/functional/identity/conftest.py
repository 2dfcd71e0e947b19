"""Fixtures for the identity tests (see harness.py)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from harness import Harness
from private_redis import PrivateRedis

from bastion.app import create_app
from bastion.clock import FrozenClock
from bastion.settings import Settings


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def harness(make_settings: Callable[..., Settings], clock: FrozenClock) -> AsyncIterator[Harness]:
    settings = make_settings(passwords={"memory_cost_kib": 7168, "time_cost": 1})
    app = create_app(settings, clock=clock)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.20", 5000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="https://testserver") as client,
    ):
        yield Harness(app, client, clock, settings)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
