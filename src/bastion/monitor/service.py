"""``MonitorService``: the detection job of a serving process.

Two sources feed one engine (``bastion.monitor.engine``):

- the tail of the audit log (``bastion.monitor.tail``), read every
  ``monitor.poll_interval`` by the one process cluster-wide that holds the
  lease "monitor-tail";
- the HTTP answers of this process (``observe``, one of the spine's
  response observers): a 5xx, a 403/404 under ``/api/v1/collections/`` (BOLA
  probing), a 401 to an ``bsk_`` API key (only its id, never the secret).
  These are not written as events (an attacker's flood would write a row per
  request); each process counts them, together when the counters are in
  Redis. The observer only appends to a bounded queue: it costs a few
  comparisons per answer, and nothing at all for a 2xx.

What fires goes to the alert store (one alert per incident), and a new alert
to the ``Dispatcher`` (delivery, in the alert's transaction) and then to the
``Responder`` (automatic responses). Successful sign-ins go to the
``DeviceWatcher`` (a mail to the user from a new device, not an alert).

Background work never crashes the process: a failing round is logged and
retried at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from bastion.clock import Clock
from bastion.db import Database, leases, transaction
from bastion.logging import get_logger
from bastion.metrics import alert_raised
from bastion.monitor.alerts import AlertInfo, AlertStore, Dispatcher, Responder
from bastion.monitor.counters import Counters, FailoverCounters, MemoryCounters, RedisCounters
from bastion.monitor.engine import Engine
from bastion.monitor.rules import active_rules
from bastion.monitor.signals import Fired, Signal
from bastion.monitor.tail import Tail
from bastion.security import hash_token
from bastion.settings import Settings

__all__ = ["DeviceWatcher", "MonitorService"]

log = get_logger(__name__)

LEASE = "monitor-tail"
LEASE_SECONDS = 10.0
# How often at most the tail's position is noted in the lease row (a write on the database).
NOTE_EVERY = 1.0
# HTTP signals waiting for the engine; beyond this a flood's signals are dropped (and counted).
QUEUE_LIMIT = 10_000
_RECORDS_PREFIX = "/api/v1/collections/"
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SIGN_INS = frozenset({("auth:login", "success"), ("auth:mfa", "success")})


class DeviceWatcher(Protocol):
    """Consumes successful sign-ins (``bastion.monitor.devices.KnownDevices``): new device → mail the user."""

    async def consume(self, signals: Sequence[Signal]) -> object: ...


class MonitorService:
    """A ``Job`` (``runtime.Services.jobs``): ``start`` in the app's lifespan, ``stop`` at close.

    ``dispatcher``, ``responder`` and ``devices`` are optional so that this
    service runs on its own; ``runtime.build_services`` plugs them in.
    """

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        db: Database,
        *,
        counters: Counters | None = None,
        dispatcher: Dispatcher | None = None,
        responder: Responder | None = None,
        devices: DeviceWatcher | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.db = db
        if counters is None:
            redis = settings.redis_url.get_secret_value() if settings.redis_url else None
            # Instances that share the database count together; another
            # deployment on the same Redis (or a test) counts apart.
            prefix = f"bastion:monitor:{hash_token(settings.sqlalchemy_url)[:12]}:"
            counters = FailoverCounters(RedisCounters(redis, prefix=prefix)) if redis else MemoryCounters()
        self.counters = counters
        rules, ratio = active_rules(settings.monitor)
        self.engine = Engine(rules, counters, ratio=ratio)
        self.store = AlertStore(clock)
        self.tail = Tail(db, admin_roles=settings.auth.mfa_required_roles)
        self.dispatcher = dispatcher
        self.responder = responder
        self.devices = devices
        self.loop = leases.LeasedLoop(
            db,
            LEASE,
            self._read_tail,
            interval=settings.monitor.poll_interval,
            lease_seconds=LEASE_SECONDS,
            stop_timeout=0,
            on_taken=self._take_tail,
            on_lost=self.tail.forget,
        )
        # The position last noted in the lease row, and when.
        self._noted: int | None = None
        self._noted_at = -math.inf
        self.dropped = 0
        self._queue: deque[Signal] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Whether HTTP signals are taken: from ``start`` on, when detection is on.
        self.listening = False

    # --- the job --------------------------------------------------------

    async def start(self) -> None:
        if not self.settings.monitor.enabled:
            return
        self.listening = True
        try:
            # Take the tail (and its position) now, so that every event from
            # the first request on is judged.
            await self.loop.hold_now()
        except Exception:
            log.exception("monitor tail lease failed at start; retrying in the background")
        await self.loop.start()
        self._tasks = [asyncio.create_task(self._run_http(), name="monitor-http")]

    async def stop(self) -> None:
        self.listening = False
        if self.loop.holding:
            with contextlib.suppress(Exception):  # the next holder judges the last second again
                await self._note_position(force=True)
        await self.loop.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.counters.close()

    async def _take_tail(self) -> None:
        """Resume where the previous holder noted it got to (``Tail.resume``)."""
        skipped = await self.tail.resume(await leases.noted_position(self.db, LEASE))
        if skipped:
            log.warning("monitor tail took over at the newest event; older events were not judged", skipped=skipped)

    async def _read_tail(self) -> None:
        await self.poll()
        await self._note_position()

    async def _note_position(self, *, force: bool = False) -> None:
        """Note the tail's position in the lease row: when it moved, at most every NOTE_EVERY (or now)."""
        position = self.tail.position
        if position is None or position == self._noted:
            return
        if force or time.monotonic() - self._noted_at >= NOTE_EVERY:
            await leases.note_position(self.db, LEASE, self.loop.holder, position)
            self._noted, self._noted_at = position, time.monotonic()

    async def _run_http(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("monitor HTTP signals failed; retrying")
                await asyncio.sleep(1.0)

    # --- one round (also for tests and the command line) -----------------

    async def poll(self) -> list[AlertInfo]:
        """Read the tail once, judge what it brings; the new alerts."""
        signals = await self.tail.read()
        if not signals:
            return []
        if self.devices is not None:
            sign_ins = [s for s in signals if (s.tag, s.outcome) in _SIGN_INS]
            if sign_ins:
                try:
                    await self.devices.consume(sign_ins)
                except Exception:
                    log.exception("new-device check failed")
        return await self.judge(signals)

    async def drain(self) -> list[AlertInfo]:
        """Judge the HTTP signals queued so far; the new alerts."""
        signals = []
        while self._queue:
            signals.append(self._queue.popleft())
        return await self.judge(signals) if signals else []

    async def judge(self, signals: Sequence[Signal]) -> list[AlertInfo]:
        fired: list[Fired] = []
        for signal in signals:
            if self.engine.watches(signal.tag):
                fired += await self.engine.feed(signal)
        return [alert for one in fired if (alert := await self.raise_alert(one)) is not None]

    async def raise_alert(self, fired: Fired) -> AlertInfo | None:
        """Store ``fired``; deliver and act on it when it opens a new incident. The alert if new."""
        async with transaction(self.db) as tx:
            alert, new = await self.store.record(tx, fired)
            if new and self.dispatcher is not None:
                await self.dispatcher.enqueue(tx, alert)
        if not new:
            return None
        log.warning("alert", rule=alert.rule, severity=alert.severity, group=alert.group_key, alert_id=str(alert.id))
        alert_raised(alert.rule, alert.severity)
        if self.responder is not None:
            try:
                await self.responder.act(fired)
            except Exception:
                log.exception("automatic response failed", rule=fired.rule, alert_id=str(alert.id))
        return alert

    # --- HTTP signals ---------------------------------------------------

    def observe(self, scope: Any, status: int, seconds: float) -> None:
        """A spine response observer: cheap, synchronous, never raises."""
        if status < 401 or not self.listening or status in (405, 409, 422, 429):
            return
        try:
            signal = self._http_signal(scope, status)
        except Exception:  # noqa: BLE001 - an observer must never fail an answer
            return
        if signal is None:
            return
        if len(self._queue) >= QUEUE_LIMIT:
            self.dropped += 1
            return
        self._queue.append(signal)
        self._wake.set()

    def _http_signal(self, scope: Any, status: int) -> Signal | None:
        client = scope.get("client")
        address = client[0] if client else None
        if status >= 500:
            return Signal(at=self.clock.now(), tag="http:5xx", outcome="failure", address=address)
        if status in (403, 404) and scope.get("path", "").startswith(_RECORDS_PREFIX):
            return Signal(
                at=self.clock.now(),
                tag="http:records_denied",
                outcome="denied",
                address=address,
                principal=_principal(scope) or (f"address:{address}" if address else None),
            )
        if status == 401:
            key_id = _api_key_id(scope)
            if key_id is not None:
                return Signal(
                    at=self.clock.now(), tag="http:api_key_401", outcome="failure", address=address, api_key=key_id
                )
        return None


def _principal(scope: Any) -> str | None:
    principal = (scope.get("state") or {}).get("principal")
    if principal is None:
        return None
    if principal.api_key_id is not None:
        return f"api_key:{principal.api_key_id}"
    if principal.client_id is not None and principal.user_id is None:
        return f"client:{principal.client_id}"
    return f"user:{principal.user_id}" if principal.user_id else None


def _api_key_id(scope: Any) -> str | None:
    """The id of a ``Bearer bsk_<id>_<secret>`` credential; never the secret."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token.startswith("bsk_"):
                return None
            key_id = token[4:].partition("_")[0]
            # Only what Bastion issues (16 hex digits): the id reaches the
            # alert, its webhook and its mail, so an attacker's text never does.
            return key_id if _KEY_ID.fullmatch(key_id) else None
    return None
