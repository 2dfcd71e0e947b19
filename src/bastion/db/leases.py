"""Leases: a job that must run once cluster-wide (the audit sequencer, the
detection tail, alert delivery, scheduled backups) holds a named lease.

One row per lease in the database every instance shares, taken with one
compare-and-set statement: the holder renews it before it expires; when a
holder dies, another process takes it over once the lease has expired. This
works the same on SQLite (several worker processes on one file) and
PostgreSQL (several instances), without an advisory lock that a connection
pool could hand to another task.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from bastion.db.database import Database, transaction
from bastion.db.models import Lease

log = structlog.get_logger("bastion.jobs")

# An expired lease row, created once; the UPDATE in hold() takes it.
_NEVER = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_CREATE = {
    "postgresql": postgresql.insert(Lease).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(Lease).on_conflict_do_nothing(),
}


async def hold(db: Database, name: str, holder: str, *, now: dt.datetime, seconds: float) -> bool:
    """Take or renew lease ``name`` for ``holder`` until ``now + seconds``; whether ``holder`` holds it.

    Renewing (same holder) or taking over an expired lease is one UPDATE
    whose WHERE holds the condition; the first ever take is an INSERT that
    does nothing when a racing process inserted first.
    """
    until = now + dt.timedelta(seconds=seconds)
    async with transaction(db) as tx:
        await tx.execute(_CREATE[tx.dialect.name].values(name=name, holder="", expires_at=_NEVER))
        taken = await tx.execute(
            update(Lease)
            .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
            .values(holder=holder, expires_at=until)
        )
    return bool(taken)


async def release(db: Database, name: str, holder: str) -> None:
    """Give lease ``name`` up now (at shutdown), if ``holder`` holds it."""
    async with transaction(db) as tx:
        await tx.execute(update(Lease).where(Lease.name == name, Lease.holder == holder).values(expires_at=_NEVER))


async def note_position(db: Database, name: str, holder: str, position: int) -> bool:
    """Record how far ``holder`` got, if it holds lease ``name`` (a lost lease notes nothing)."""
    async with transaction(db) as tx:
        noted = await tx.execute(
            update(Lease).where(Lease.name == name, Lease.holder == holder).values(position=position)
        )
    return bool(noted)


async def noted_position(db: Database, name: str) -> int | None:
    """Where the holders of lease ``name`` noted they got to, if any did."""
    found = await db.value(select(Lease.position).where(Lease.name == name))
    return None if found is None else int(found)


def new_holder() -> str:
    """A holder name unique to this process and job: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeasedLoop:
    """A background job of ``serve`` that runs once cluster-wide.

    It holds lease ``name`` (renewed every third of ``lease_seconds``, in
    wall time: other processes compare against theirs) and, while it holds
    it, awaits ``tick()`` every ``interval`` seconds (at least once per
    renewal, so an interval longer than a third of the lease is cut to
    that), or at once after ``wake()``; a tick may return how long to wait
    before the next one instead. ``on_taken``/``on_lost`` run when the lease changes hands. A
    failing tick is logged and the loop goes on: a background job never
    crashes the process. The lease is renewed during a long tick too (a
    backup, a rewrap slice). Another process takes over within ``lease_seconds``
    of this one dying, or at its next renewal after this one stops.
    ``start``/``stop`` match the runtime's ``Job``; ``stop`` lets a tick
    under way finish (up to ``stop_timeout``; 0 cancels it), then gives the
    lease up.

    Scheduled work (the audit sequencer, the detection tail, alert delivery,
    backups, drills, retention, rotation) is a tick of one of these; a tick
    of a cron job decides whether its work is due.
    """

    def __init__(
        self,
        db: Database,
        name: str,
        tick: Callable[[], Awaitable[float | None]],
        *,
        interval: float,
        lease_seconds: float = 10.0,
        stop_timeout: float = 30.0,
        on_taken: Callable[[], Awaitable[None]] | None = None,
        on_lost: Callable[[], None] | None = None,
        holder: str | None = None,
    ) -> None:
        self.db = db
        self.name = name
        self.holder = holder or new_holder()
        self.holding = False
        self._tick = tick
        self._interval = interval
        self._lease_seconds = lease_seconds
        self._stop_timeout = stop_timeout
        self._on_taken = on_taken
        self._on_lost = on_lost
        self._renewed_at = -math.inf
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """Run the next tick now rather than after the interval."""
        self._wake.set()

    async def hold_now(self) -> bool:
        """Take or renew the lease now; whether this process holds it."""
        held = await hold(self.db, self.name, self.holder, now=dt.datetime.now(dt.UTC), seconds=self._lease_seconds)
        self._renewed_at = time.monotonic()
        if held and not self.holding and self._on_taken is not None:
            await self._on_taken()
        elif not held and self.holding and self._on_lost is not None:
            self._on_lost()
        self.holding = held
        return held

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), self._stop_timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.holding:
            with contextlib.suppress(Exception):
                await release(self.db, self.name, self.holder)
            self.holding = False
            self._renewed_at = -math.inf

    async def _run(self) -> None:
        while not self._stopping:
            wait: float | None = None
            try:
                if time.monotonic() - self._renewed_at > self._lease_seconds / 3:
                    await self.hold_now()
                if self.holding:
                    wait = await self._ticking()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a background job logs and retries, never crashes the process
                log.error("background job failed", job=self.name, error=type(exc).__name__)
                self._renewed_at = -math.inf
            if self._stopping:
                break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(wait or self._interval, self._lease_seconds / 3))

    async def _ticking(self) -> float | None:
        """One tick, with the lease renewed while it runs."""
        renewing = asyncio.create_task(self._renew_while_ticking(), name=f"{self.name}-lease")
        try:
            return await self._tick()
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    async def _renew_while_ticking(self) -> None:
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            try:
                if not await self.hold_now():
                    log.error("lease lost during a tick", job=self.name)
            except Exception as exc:  # noqa: BLE001 - the next renewal tries again
                log.warning("lease renewal failed during a tick", job=self.name, error=type(exc).__name__)
