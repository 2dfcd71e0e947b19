"""``Throttle``: the one way Bastion limits how often a client may do something.

A throttle is a limit, a scope (the counter's name) and a key (whose
counter: an address, an account, an API key). Per-address limits on the
sign-in routes, per-account limits before any password hash, the budget of
each API key and an extension's per-route limit are all throttles, and they
all behave the same way:

- over the limit: 429 problem with ``Retry-After`` and ``RateLimit-*``;
- counter storage down (Redis unreachable): 503 problem, logged, and the
  request refused. Failing open would switch brute-force protection off
  whenever Redis is unreachable; failing with a 500 would hide why. The next
  request tries the storage again, so service resumes by itself when Redis
  is back (OWASP ASVS 5.0 V2.4.1, V6.3.1).

Refusals are logged aggregated (one line per scope and interval with a
count), so a flood of refused requests is not also a flood of log lines.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response

from bastion.http.problems import NotReady, TooManyRequests
from bastion.http.ratelimit import RateLimiter, RateLimitState, parse_limit, storage_errors

if TYPE_CHECKING:
    from bastion.settings import Settings

__all__ = ["Throttle", "address_key", "by_address", "rate_limit"]

KeyOf = Callable[[Request], str]
LimitOf = Callable[["Settings"], str]


def address_key(host: str, ipv6_prefix: int) -> str:
    """The throttle key of a client address: an IPv4 address as is, an IPv6
    one as its ``/ipv6_prefix`` network.

    One IPv6 subscriber is routinely given a whole /64 (or /56, /48), so
    counting each address alone would give them 2**64 budgets.
    IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # "unknown", or a test client's name
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))
    return str(address)


def by_address(request: Request) -> str:
    """The client's address (trusted-proxy middleware has already resolved it), grouped as ``address_key``."""
    host = request.client.host if request.client is not None else "unknown"
    limiter: RateLimiter = request.app.state.rate_limiter
    return address_key(host, limiter.ipv6_prefix)


@dataclass(frozen=True)
class Throttle:
    """``limit`` per ``key`` within ``scope``.

    ``limit`` is in the ``limits`` notation ("10/minute"), or a function of
    the settings (``lambda s: s.auth.login_rate_per_ip``) so that operators
    tune it. ``key`` picks the client when the throttle is a route
    dependency (``Depends(throttle)``); ``None`` means the handler names the
    key itself (``await throttle.hit(request, account_key(email))``).
    """

    scope: str
    limit: str | LimitOf
    key: KeyOf | None = by_address

    def __post_init__(self) -> None:
        if isinstance(self.limit, str):
            parse_limit(self.limit)  # a malformed limit fails at declaration, not on a request

    def limit_in(self, settings: Settings) -> str:
        return self.limit if isinstance(self.limit, str) else self.limit(settings)

    async def __call__(self, request: Request, response: Response) -> None:
        """As a FastAPI dependency: count the request before the route does any work.

        Allowed responses get ``RateLimit-*`` headers, unless the route
        returns its own ``Response`` object (FastAPI then drops them).
        """
        if self.key is None:
            raise TypeError(f"throttle {self.scope} has no request key; call hit() with one")
        verdict = await self.hit(request, self.key(request))
        response.headers.update(verdict.headers())

    async def hit(self, request: Request, key: str) -> RateLimitState:
        """Count one request for ``key``: 429 over the limit, 503 if the counters are unreachable."""
        return await self._check(request.app.state, key, consume=True)

    async def peek(self, state: Any, key: str) -> RateLimitState:
        """Refuse (429/503) as ``hit`` would, without counting: for refusals made before routing."""
        return await self._check(state, key, consume=False)

    async def clear(self, limiter: RateLimiter, settings: Settings, key: str) -> None:
        """Forget ``key``'s count (an unlocked account gets its budget back at once)."""
        try:
            await limiter.reset(self.limit_in(settings), self.scope, key)
        except storage_errors():
            limiter.refusals.note("throttle_storage_unavailable", self.scope)
            raise NotReady from None

    async def _check(self, state: Any, key: str, *, consume: bool) -> RateLimitState:
        limiter: RateLimiter = state.rate_limiter
        limit = self.limit if isinstance(self.limit, str) else self.limit(state.settings)
        try:
            verdict = await (limiter.hit if consume else limiter.test)(limit, self.scope, key)
        except storage_errors():
            limiter.refusals.note("throttle_storage_unavailable", self.scope)
            raise NotReady from None
        if not verdict.allowed:
            # The key is never logged: it may be personal data (an account).
            limiter.refusals.note("rate_limited", self.scope)
            raise TooManyRequests(headers=verdict.headers())
        return verdict


def rate_limit(limit: str, *, scope: str, key: KeyOf | None = None) -> Throttle:
    """A per-route throttle for ``Depends``: ``limit`` per client address
    (or per ``key(request)``) in the counter ``scope`` ("reports:create").

    It runs before the route body, so a refused request costs no work: 429
    over the limit, 503 when the counter storage is down (``Throttle``).
    """
    return Throttle(scope, limit, key or by_address)
