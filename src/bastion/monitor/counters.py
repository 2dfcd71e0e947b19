"""Sliding-window counters for the detection rules: in process, or in Redis.

Three questions the rules ask, over the last ``window`` seconds before ``now``:

- ``hit``: how many matching events for this key (exact up to ``cap``: only
  whether a threshold was crossed matters, so no key keeps more than ``cap``
  timestamps);
- ``distinct``: how many distinct members (logins, addresses) for this key,
  exact up to ``cap`` members (each remembered with its last time seen; the
  oldest goes first when the cap is reached);
- ``add``/``total``: a large count (the global failure ratio) kept in
  ``BUCKETS`` buckets per window, so it costs a fixed amount whatever the flood.

Bounded memory is the point: an attacker's list of a million addresses or
logins makes a million keys, so ``MemoryCounters`` keeps at most ``max_keys``
of them and forgets the least recently touched first. A key forgotten early
only under-counts an address that has gone quiet among a million others;
the global and per-network rules still see the flood. ``RedisCounters``
bounds each key the same way (sorted sets trimmed to ``cap``) and lets every
key expire with its window, so Redis holds only what is live.

``claim(key, ttl)`` is a once-per-period token (``SET NX EX`` in Redis), so
several instances counting together raise one alert per period, not one each.

Times are the events' own (``Signal.at``), never the wall clock: a replay
with an injected clock counts exactly as the live stream would.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Generic, NamedTuple, Protocol, TypeVar

from bastion.logging import get_logger

if TYPE_CHECKING:
    import redis.asyncio

log = get_logger(__name__)

__all__ = ["BUCKETS", "Counters", "FailoverCounters", "MemoryCounters", "Op", "RedisCounters"]

# Resolution of the bucketed totals: a window is split into this many parts.
BUCKETS = 30
# Default bound on live keys in one process (each a few hundred bytes at most).
MAX_KEYS = 50_000


class Op(NamedTuple):
    """One count of ``Counters.run``: ``kind`` is "hit", "distinct", "add" or "total"."""

    kind: str
    key: str
    now: float
    window: float
    # hit, distinct: the cap; add: the amount; total: unused.
    number: int
    member: str = ""


class Counters(Protocol):
    """Where the rules count. Every method is safe to call concurrently."""

    async def hit(self, key: str, now: float, window: float, cap: int) -> int:
        """Count one event for ``key`` at ``now``; events of ``key`` within ``window`` (≤ ``cap``)."""
        ...

    async def distinct(self, key: str, member: str, now: float, window: float, cap: int) -> int:
        """Record ``member`` for ``key`` at ``now``; distinct members within ``window`` (≤ ``cap``)."""
        ...

    async def add(self, key: str, now: float, window: float, amount: int = 1) -> int:
        """Add ``amount`` to a bucketed total; the total within ``window`` (to one bucket's precision)."""
        ...

    async def total(self, key: str, now: float, window: float) -> int:
        """A bucketed total within ``window``, without adding."""
        ...

    async def claim(self, key: str, now: float, ttl: float) -> bool:
        """True for the first caller per ``ttl`` seconds (across instances when shared)."""
        ...

    async def run(self, ops: Sequence[Op]) -> list[int]:
        """Every op in order (one round trip when shared); each op's result."""
        ...

    async def close(self) -> None: ...


V = TypeVar("V")


class _Bounded(Generic[V]):
    """An LRU map holding at most ``max_keys`` entries."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self.entries: OrderedDict[str, V] = OrderedDict()

    def get(self, key: str) -> V | None:
        value = self.entries.get(key)
        if value is not None:
            self.entries.move_to_end(key)
        return value

    def put(self, key: str, value: V) -> None:
        self.entries[key] = value
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_keys:
            self.entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self.entries)


class MemoryCounters:
    """One process's counters: exact within their caps, ``max_keys`` keys per kind at most.

    No ``await`` inside a method: each runs to completion on the event loop,
    so concurrent rules never interleave a read and a write.
    """

    def __init__(self, *, max_keys: int = MAX_KEYS) -> None:
        self._hits: _Bounded[deque[float]] = _Bounded(max_keys)
        self._members: _Bounded[OrderedDict[str, float]] = _Bounded(max_keys)
        self._buckets: _Bounded[dict[int, int]] = _Bounded(max_keys)
        self._claims: _Bounded[float] = _Bounded(max_keys)

    def keys(self) -> int:
        """Live keys over every kind (for the bounded-memory tests)."""
        return len(self._hits) + len(self._members) + len(self._buckets) + len(self._claims)

    def _hit(self, key: str, now: float, window: float, cap: int) -> int:
        times = self._hits.get(key)
        if times is None or times.maxlen != cap:
            times = deque(times or (), maxlen=cap)
            self._hits.put(key, times)
        times.append(now)
        floor = now - window
        while times and times[0] <= floor:
            times.popleft()
        return len(times)

    def _distinct(self, key: str, member: str, now: float, window: float, cap: int) -> int:
        members = self._members.get(key)
        if members is None:
            members = OrderedDict()
            self._members.put(key, members)
        members[member] = now
        members.move_to_end(member)
        floor = now - window
        # Oldest first: drop what left the window, then what is over the cap.
        while members:
            oldest, seen = next(iter(members.items()))
            if seen > floor and len(members) <= cap:
                break
            del members[oldest]
        return len(members)

    def _add(self, key: str, now: float, window: float, amount: int = 1) -> int:
        width = window / BUCKETS
        bucket = int(now // width)
        buckets = self._buckets.get(key)
        if buckets is None:
            buckets = {}
            self._buckets.put(key, buckets)
        buckets[bucket] = buckets.get(bucket, 0) + amount
        for old in [b for b in buckets if b <= bucket - BUCKETS]:
            del buckets[old]
        return sum(buckets.values())

    def _total(self, key: str, now: float, window: float) -> int:
        buckets = self._buckets.get(key)
        if not buckets:
            return 0
        bucket = int(now // (window / BUCKETS))
        return sum(count for b, count in buckets.items() if b > bucket - BUCKETS)

    async def hit(self, key: str, now: float, window: float, cap: int) -> int:
        return self._hit(key, now, window, cap)

    async def distinct(self, key: str, member: str, now: float, window: float, cap: int) -> int:
        return self._distinct(key, member, now, window, cap)

    async def add(self, key: str, now: float, window: float, amount: int = 1) -> int:
        return self._add(key, now, window, amount)

    async def total(self, key: str, now: float, window: float) -> int:
        return self._total(key, now, window)

    async def claim(self, key: str, now: float, ttl: float) -> bool:
        until = self._claims.get(key)
        if until is not None and until > now:
            return False
        self._claims.put(key, now + ttl)
        return True

    async def run(self, ops: Sequence[Op]) -> list[int]:
        # Plain calls, no await between them: the ops of one signal are one step.
        results = []
        for op in ops:
            if op.kind == "hit":
                results.append(self._hit(op.key, op.now, op.window, op.number))
            elif op.kind == "distinct":
                results.append(self._distinct(op.key, op.member, op.now, op.window, op.number))
            elif op.kind == "add":
                results.append(self._add(op.key, op.now, op.window, op.number))
            else:
                results.append(self._total(op.key, op.now, op.window))
        return results

    async def close(self) -> None:
        return None


# Unique members for the sorted sets of ``hit`` (two events at the same
# instant are two events): this process's id and a sequence number.
_SEQUENCE = itertools.count()
_PROCESS = f"{os.getpid()}-{id(_SEQUENCE):x}"


# One signal's counts in one script call: fewer commands for redis-py to
# pack (its CPU, not Redis's, was most of a count's cost, measured), and
# each count atomic. ARGV: per op, kind ("h", "d", "a", "t"), now, window,
# number (cap or amount), member; KEYS: per op, its key (for "a" and "t",
# the bucket keys' common stem: the buckets are stem:<n>).
_COUNT_SCRIPT = """
local out = {}
for i = 1, #KEYS do
  local base = (i - 1) * 5
  local kind, now, window = ARGV[base + 1], tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local number, member, key = tonumber(ARGV[base + 4]), ARGV[base + 5], KEYS[i]
  local ttl = math.floor(window) + 1
  if kind == "h" or kind == "d" then
    redis.call("ZADD", key, now, member)
    redis.call("ZREMRANGEBYSCORE", key, "-inf", now - window)
    redis.call("ZREMRANGEBYRANK", key, 0, -(number + 1))
    redis.call("EXPIRE", key, ttl)
    out[i] = redis.call("ZCARD", key)
  else
    local bucket = math.floor(now / (window / BUCKETS))
    if kind == "a" then
      redis.call("INCRBY", key .. ":" .. bucket, number)
      redis.call("EXPIRE", key .. ":" .. bucket, ttl)
    end
    local total = 0
    for b = bucket - BUCKETS + 1, bucket do
      total = total + (tonumber(redis.call("GET", key .. ":" .. b)) or 0)
    end
    out[i] = total
  end
end
return out
""".replace("BUCKETS", str(BUCKETS))


class _OneOpAtATime:
    """``hit``, ``distinct``, ``add`` and ``total`` as one-op calls of the subclass's ``run``."""

    async def run(self, ops: Sequence[Op]) -> list[int]:
        raise NotImplementedError

    async def hit(self, key: str, now: float, window: float, cap: int) -> int:
        return (await self.run([Op("hit", key, now, window, cap)]))[0]

    async def distinct(self, key: str, member: str, now: float, window: float, cap: int) -> int:
        return (await self.run([Op("distinct", key, now, window, cap, member)]))[0]

    async def add(self, key: str, now: float, window: float, amount: int = 1) -> int:
        return (await self.run([Op("add", key, now, window, amount)]))[0]

    async def total(self, key: str, now: float, window: float) -> int:
        return (await self.run([Op("total", key, now, window, 0)]))[0]


class RedisCounters(_OneOpAtATime):
    """Counters shared by every instance through Redis, under ``prefix``.

    ``hit`` and ``distinct`` are sorted sets scored by time: a count adds,
    drops what left the window, trims to ``cap`` (oldest first), counts, and
    sets the key to expire with its window. Totals are one integer key per
    bucket, expiring after the window. A signal's counts are one script call
    (``run``). A Redis that does not answer raises: the caller (the monitor)
    logs it and goes on; it never fails a request. The bucket keys are named
    inside the script, so this needs a standalone Redis (or one slot), not a
    Redis Cluster spread over slots.
    """

    def __init__(self, url: str, *, prefix: str = "bastion:monitor:") -> None:
        import redis.asyncio

        self.prefix = prefix
        self._redis: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self._count = self._redis.register_script(_COUNT_SCRIPT)

    async def run(self, ops: Sequence[Op]) -> list[int]:
        keys: list[str] = []
        args: list[str | float | int] = []
        for op in ops:
            if op.kind == "hit":
                keys.append(f"{self.prefix}h:{op.key}")
                args += ["h", repr(op.now), repr(op.window), op.number, f"{op.now!r}:{_PROCESS}:{next(_SEQUENCE)}"]
            elif op.kind == "distinct":
                keys.append(f"{self.prefix}d:{op.key}")
                args += ["d", repr(op.now), repr(op.window), op.number, op.member]
            else:
                keys.append(f"{self.prefix}t:{op.key}")
                args += ["a" if op.kind == "add" else "t", repr(op.now), repr(op.window), op.number, ""]
        if not keys:
            return []
        return [int(count) for count in await self._count(keys=keys, args=args)]

    async def claim(self, key: str, now: float, ttl: float) -> bool:
        return bool(await self._redis.set(f"{self.prefix}c:{key}", "1", nx=True, px=max(1, int(ttl * 1000))))

    async def close(self) -> None:
        await self._redis.aclose()


class FailoverCounters(_OneOpAtATime):
    """Redis while it answers, this process's memory while it does not.

    Detection must outlive a dead Redis: the counts of an attack in progress
    go on in memory (per instance, so a flood spread over instances is seen
    by each in part) rather than being lost, and the switch is logged, at
    most once a minute. Each call tries Redis again.
    """

    def __init__(self, shared: Counters, local: Counters | None = None) -> None:
        self.shared = shared
        self.local = local or MemoryCounters()
        self._warned = 0.0

    def _failed(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._warned > 60:
            self._warned = now
            log.warning("monitor counters: Redis does not answer; counting in this process", error=repr(error))

    async def run(self, ops: Sequence[Op]) -> list[int]:
        try:
            return await self.shared.run(ops)
        except Exception as error:  # noqa: BLE001 - any Redis failure: count locally
            self._failed(error)
            return await self.local.run(ops)

    async def claim(self, key: str, now: float, ttl: float) -> bool:
        try:
            return await self.shared.claim(key, now, ttl)
        except Exception as error:  # noqa: BLE001
            self._failed(error)
            return await self.local.claim(key, now, ttl)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.shared.close()
        await self.local.close()
