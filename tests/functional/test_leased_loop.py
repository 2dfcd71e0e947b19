"""LeasedLoop: serve's scheduled work runs once cluster-wide and survives a holder's death."""

from __future__ import annotations

import asyncio

from bastion.db import open_database
from bastion.db.leases import LeasedLoop
from bastion.settings import Settings


async def _until(condition: object, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_one_loop_of_two_ticks_and_the_other_takes_over_when_it_stops(settings: Settings) -> None:
    first_db, second_db = open_database(settings.sqlalchemy_url), open_database(settings.sqlalchemy_url)
    ticks = {"first": 0, "second": 0}

    def ticker(name: str):  # type: ignore[no-untyped-def]
        async def tick() -> None:
            ticks[name] += 1

        return tick

    first = LeasedLoop(first_db, "test-job", ticker("first"), interval=0.02, lease_seconds=0.6)
    second = LeasedLoop(second_db, "test-job", ticker("second"), interval=0.02, lease_seconds=0.6)
    try:
        await first.start()
        await _until(lambda: ticks["first"] >= 3)
        await second.start()
        await asyncio.sleep(0.5)
        assert ticks["second"] == 0, "two holders ran the same once-per-cluster job"
        await first.stop()  # gives the lease up: the other takes it at its next renewal
        await _until(lambda: ticks["second"] >= 3)
        assert not first.holding
        assert second.holding
    finally:
        await first.stop()
        await second.stop()
        await first_db.close()
        await second_db.close()


async def test_a_failing_tick_is_logged_and_the_loop_goes_on(settings: Settings) -> None:
    db = open_database(settings.sqlalchemy_url)
    calls = 0

    async def tick() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")

    loop = LeasedLoop(db, "failing-job", tick, interval=0.02, lease_seconds=0.6)
    try:
        await loop.start()
        await _until(lambda: calls >= 3)
    finally:
        await loop.stop()
        await db.close()


async def test_a_tick_longer_than_the_lease_keeps_it(settings: Settings) -> None:
    """A backup or a rewrap slice may outlast the lease: the loop renews it meanwhile, so a
    second process never starts the same once-per-cluster work alongside."""
    first_db, second_db = open_database(settings.sqlalchemy_url), open_database(settings.sqlalchemy_url)
    running = asyncio.Event()
    release = asyncio.Event()
    second_ticks = 0

    async def long_tick() -> None:
        running.set()
        await release.wait()

    async def second_tick() -> None:
        nonlocal second_ticks
        second_ticks += 1

    first = LeasedLoop(first_db, "long-job", long_tick, interval=0.02, lease_seconds=0.6)
    second = LeasedLoop(second_db, "long-job", second_tick, interval=0.02, lease_seconds=0.6)
    try:
        await first.start()
        await asyncio.wait_for(running.wait(), 5)
        await second.start()
        await asyncio.sleep(2.0)  # more than three leases long
        assert second_ticks == 0, "the lease ran out under a long tick and another process took it"
        release.set()
    finally:
        release.set()
        await first.stop()
        await second.stop()
        await first_db.close()
        await second_db.close()
