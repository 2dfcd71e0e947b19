"""Fixtures for the access tests: the identity harness plus ready-made users."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from bastion.app import create_app
from bastion.clock import FrozenClock
from bastion.network.listener import AdminListener
from bastion.settings import Settings

sys.path.insert(0, str(Path(__file__).parent.parent / "identity"))
from harness import Harness


@pytest.fixture
async def harness(make_settings: Callable[..., Settings]) -> AsyncIterator[Harness]:
    clock = FrozenClock()
    settings = make_settings(passwords={"memory_cost_kib": 7168, "time_cost": 1})
    app = create_app(settings, clock=clock)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.30", 5000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="https://testserver") as client,
    ):
        yield Harness(app, client, clock, settings)


@pytest.fixture
async def admin_client(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    """The same app as seen through the admin listener, from loopback with a verified client certificate."""
    listener = AdminListener(harness.app, client_cert_verified=True)
    transport = httpx.ASGITransport(app=listener, client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        yield client
