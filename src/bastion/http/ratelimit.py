"""Rate limiting: counters in memory or Redis, behind ``Throttle`` (bastion.http.throttle).

Anti-automation for costly or sensitive routes (OWASP ASVS 5.0 V2.4.1) and
the brute-force control of authentication (V6.3.1). One instance keeps its
counters in memory; several instances share them through Redis, so a client
cannot multiply its budget by spreading requests over instances.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError

from bastion.logging import get_logger
from bastion.metrics import throttled

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["RateLimitState", "RateLimiter", "RefusalLog", "parse_limit", "storage_errors"]

log = get_logger(__name__)

# A dead Redis must fail a request quickly (and closed), not hang it.
_REDIS_TIMEOUT_SECONDS = 1.0


def storage_errors() -> tuple[type[Exception], ...]:
    """What counter storage raises when it cannot answer, for an ``except`` clause.

    redis-py (~6 MiB) is imported only by a limiter that uses Redis, so its
    errors are named only once it is loaded: before that no Redis error can
    be raised, and the tuple without it catches everything that can.
    """
    redis = sys.modules.get("redis")
    return (StorageError, OSError) if redis is None else (StorageError, redis.RedisError, OSError)


class SweptMemoryStorage(MemoryStorage):
    """``limits``' in-process storage, without its sweep of every counter on every hit.

    ``MemoryStorage.incr`` starts a task that walks all counters after each
    hit. A flood that claims a new address per request leaves one counter per
    address, so each hit cost O(counters): measured, that walk was most of
    the cost of a throttled login attempt, and it starved legitimate
    requests. Here a counter is dropped when read after expiry (``get``), and
    the full walk runs at most once per ``sweep_seconds``.
    """

    def __init__(self, *, sweep_seconds: float = 10.0) -> None:
        super().__init__()
        self.sweep_seconds = sweep_seconds
        self._next_sweep = 0.0

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        # No await between the read and the write: atomic on the event loop.
        await self.get(key)
        self._sweep()
        self.storage[key] += amount
        if self.storage[key] == amount:
            self.expirations[key] = time.time() + expiry
        return self.storage[key]

    async def decr(self, key: str, amount: int = 1) -> int:
        await self.get(key)
        self.storage[key] = max(self.storage[key] - amount, 0)
        return self.storage[key]

    def _sweep(self) -> None:
        now = time.time()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.sweep_seconds
        for key in [key for key, at in self.expirations.items() if at <= now]:
            self.storage.pop(key, None)
            self.expirations.pop(key, None)
            self.locks.pop(key, None)


@dataclass(frozen=True)
class RateLimitState:
    """The outcome of one check, with everything the response headers need."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # seconds until the window frees up, rounded up
    retry_after: int  # seconds to wait when refused (>= 1), else 0

    def headers(self) -> dict[str, str]:
        """``RateLimit-*`` fields (draft-ietf-httpapi-ratelimit-headers), delta seconds.

        ``Retry-After`` (RFC 9110 section 10.2.3) is added to refusals only.
        """
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


@functools.lru_cache(maxsize=256)
def parse_limit(limit: str) -> RateLimitItem:
    """Parse ``limits`` notation ("5/minute", "100 per hour"); raises ValueError."""
    return parse(limit)


class RateLimiter:
    """Sliding-window rate limits on the ``limits`` library.

    ``storage_uri`` is ``memory://`` (one process) or ``redis://host:port/db``
    / ``rediss://…`` (shared by every instance). ``key_prefix`` namespaces the
    Redis keys, so several deployments can share one Redis. ``ipv6_prefix``
    is the network length one IPv6 client address counts as
    (``throttle.address_key``); ``refusals`` aggregates the refusal log.
    """

    def __init__(
        self,
        storage_uri: str = "memory://",
        *,
        key_prefix: str = "bastion",
        ipv6_prefix: int = 64,
        refusals: RefusalLog | None = None,
    ) -> None:
        self.ipv6_prefix = ipv6_prefix
        self.refusals = refusals or RefusalLog()
        self._pool: redis.asyncio.ConnectionPool | None = None
        self._storage = self._open(storage_uri, key_prefix)
        # The sliding window counter keeps two counters per key (this window
        # and the last, weighted by overlap): O(1) storage and work per hit,
        # unlike the moving window that stores every hit, and without the
        # fixed window's burst of twice the limit across a boundary.
        self._strategy = SlidingWindowCounterRateLimiter(self._storage)

    def _open(self, storage_uri: str, key_prefix: str) -> Storage:
        scheme = urlsplit(storage_uri).scheme.lower().removeprefix("async+")
        if scheme == "memory":
            return SweptMemoryStorage()
        if scheme in ("redis", "rediss"):
            import redis.asyncio

            uri = storage_uri.removeprefix("async+")
            # We own the pool so that close() can release it; limits documents
            # ``connection_pool`` but types its options as plain scalars.
            self._pool = redis.asyncio.ConnectionPool.from_url(
                uri,
                socket_timeout=_REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=_REDIS_TIMEOUT_SECONDS,
            )
            return RedisStorage(
                f"async+{uri}",
                implementation="redispy",
                key_prefix=key_prefix,
                wrap_exceptions=True,
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
        # Name only the scheme: the URI may carry a password.
        raise ValueError(f"unsupported rate-limit storage scheme: {scheme!r}")

    async def hit(self, limit: str, *identifiers: str) -> RateLimitState:
        """Consume one request from ``limit`` for ``identifiers``.

        Raises ``limits.errors.StorageError`` when Redis cannot be reached.
        """
        item = parse_limit(limit)
        allowed = await self._strategy.hit(item, *identifiers)
        return await self._state(item, identifiers, allowed=allowed)

    async def test(self, limit: str, *identifiers: str) -> RateLimitState:
        """Whether a request would be allowed now, without consuming one."""
        item = parse_limit(limit)
        allowed = await self._strategy.test(item, *identifiers)
        return await self._state(item, identifiers, allowed=allowed)

    async def reset(self, limit: str, *identifiers: str) -> None:
        """Forget the counter of ``limit`` for ``identifiers``."""
        await self._strategy.clear(parse_limit(limit), *identifiers)

    async def ping(self) -> bool:
        """Whether the storage answers (for /readyz)."""
        try:
            return await self._storage.check()
        except storage_errors():  # report, don't raise
            return False

    async def close(self) -> None:
        """Release the Redis connections, if any."""
        if self._pool is not None:
            await self._pool.aclose()

    async def _state(self, item: RateLimitItem, identifiers: tuple[str, ...], *, allowed: bool) -> RateLimitState:
        reset_at, remaining = await self._strategy.get_window_stats(item, *identifiers)
        reset_after = max(0, math.ceil(reset_at - time.time()))
        if allowed:
            return RateLimitState(True, item.amount, max(0, remaining), reset_after, 0)
        return RateLimitState(False, item.amount, 0, reset_after, max(1, reset_after))


class RefusalLog:
    """Refusals logged as one line per event and scope per ``interval`` seconds, with a count.

    The first refusal of a quiet scope is logged at once; those that follow
    within the interval are counted, and the count goes out with the next
    line. A flood of a million 429s is a few lines a minute, not a million.
    """

    def __init__(self, interval: float = 10.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._pending: dict[tuple[str, str], tuple[float, int]] = {}

    def note(self, event: str, scope: str) -> None:
        if event == "rate_limited":
            throttled(scope)
        now = self.clock()
        last, count = self._pending.get((event, scope), (now - self.interval, 0))
        count += 1
        if now - last < self.interval:
            self._pending[(event, scope)] = (last, count)
            return
        self._pending[(event, scope)] = (now, 0)
        level = log.error if event == "throttle_storage_unavailable" else log.warning
        level(event, scope=scope, count=count, interval_seconds=self.interval)
