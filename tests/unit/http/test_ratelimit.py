"""Rate limiting (bastion.http.ratelimit).

OWASP ASVS 5.0 V2.4.1 (anti-automation against excessive calls) and V6.3.1
(controls against credential stuffing and password brute force): a throttled
request is refused with 429 before the route does any work, and instances
sharing Redis share one budget.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import redis.asyncio
from fastapi import Depends, FastAPI, Request, Response
from limits.errors import StorageError

from bastion.http.problems import PROBLEM_JSON, Problem, render
from bastion.http.ratelimit import RateLimiter, RateLimitState, SweptMemoryStorage
from bastion.http.throttle import rate_limit

LIMIT = "3/minute"


class Calls:
    """Counts how often the route body ran."""

    def __init__(self) -> None:
        self.count = 0


def make_app(limiter: RateLimiter, calls: Calls) -> FastAPI:
    app = FastAPI()
    app.state.rate_limiter = limiter

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        body, headers = render(exc, request_id="test")
        return Response(body, status_code=exc.status, headers=headers)

    app.add_exception_handler(Problem, on_problem)

    @app.post(
        "/login",
        dependencies=[Depends(rate_limit(LIMIT, scope="test:login:ip"))],
    )
    async def login() -> dict[str, bool]:
        calls.count += 1  # stands in for the password hash a throttle must spare
        return {"ok": True}

    by_account = rate_limit(LIMIT, scope="test:login:account", key=lambda r: r.headers["x-account"])

    @app.post("/login-account", dependencies=[Depends(by_account)])
    async def login_account() -> dict[str, bool]:
        calls.count += 1
        return {"ok": True}

    return app


def client(app: FastAPI, ip: str = "198.51.100.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest_asyncio.fixture
async def limiter() -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter()
    yield limiter
    await limiter.close()


@pytest.mark.asyncio
async def test_allows_the_limit_then_refuses_with_429(limiter: RateLimiter, calls: Calls) -> None:
    """V2.4.1: N requests pass with RateLimit-* headers, the next gets a 429 problem."""
    async with client(make_app(limiter, calls)) as http:
        for expected_remaining in (2, 1, 0):
            ok = await http.post("/login")
            assert ok.status_code == 200
            assert ok.headers["RateLimit-Limit"] == "3"
            assert ok.headers["RateLimit-Remaining"] == str(expected_remaining)
            assert 0 <= int(ok.headers["RateLimit-Reset"]) <= 60
            assert "Retry-After" not in ok.headers

        refused = await http.post("/login")

    assert refused.status_code == 429
    assert refused.headers["content-type"] == PROBLEM_JSON
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["RateLimit-Limit"] == "3"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert int(refused.headers["RateLimit-Reset"]) >= 0
    body = json.loads(refused.content)
    assert body["status"] == 429
    assert body["title"] == "Too Many Requests"
    assert body["request_id"] == "test"


@pytest.mark.asyncio
async def test_refused_request_never_reaches_the_route(limiter: RateLimiter, calls: Calls) -> None:
    """V6.3.1: the check runs first, so brute force costs the server no hashing."""
    async with client(make_app(limiter, calls)) as http:
        statuses = [(await http.post("/login")).status_code for _ in range(6)]

    assert statuses == [200, 200, 200, 429, 429, 429]
    assert calls.count == 3


@pytest.mark.asyncio
async def test_clients_have_separate_counters(limiter: RateLimiter, calls: Calls) -> None:
    app = make_app(limiter, calls)
    async with client(app, "198.51.100.1") as first, client(app, "198.51.100.2") as second:
        assert [(await first.post("/login")).status_code for _ in range(4)][-1] == 429
        assert (await second.post("/login")).status_code == 200


@pytest.mark.asyncio
async def test_custom_key_and_scopes_are_separate(limiter: RateLimiter, calls: Calls) -> None:
    """A per-account limit counts per account, whatever the IP, apart from the IP limit."""
    app = make_app(limiter, calls)
    async with client(app, "198.51.100.1") as first, client(app, "198.51.100.2") as second:
        for http in (first, second, first):
            ok = await http.post("/login-account", headers={"x-account": "alice"})
            assert ok.status_code == 200
        refused = await second.post("/login-account", headers={"x-account": "alice"})
        other = await second.post("/login-account", headers={"x-account": "bob"})
        ip_scope = await first.post("/login")

    assert refused.status_code == 429
    assert other.status_code == 200
    assert ip_scope.status_code == 200


@pytest.mark.asyncio
async def test_reset_restores_the_budget(limiter: RateLimiter, calls: Calls) -> None:
    async with client(make_app(limiter, calls)) as http:
        for _ in range(3):
            await http.post("/login")
        assert (await http.post("/login")).status_code == 429

        await limiter.reset(LIMIT, "test:login:ip", "198.51.100.1")

        assert (await http.post("/login")).status_code == 200


@pytest.mark.asyncio
async def test_peek_does_not_consume(limiter: RateLimiter) -> None:
    for _ in range(3):
        assert (await limiter.test("3/hour", "peek", "k")).allowed
    assert (await limiter.hit("3/hour", "peek", "k")).remaining == 2


@pytest.mark.asyncio
async def test_storage_failure_fails_closed(calls: Calls) -> None:
    """An unreachable counter store refuses requests (503) rather than letting all through."""

    class BrokenLimiter(RateLimiter):
        async def hit(self, limit: str, *identifiers: str) -> RateLimitState:
            raise StorageError(ConnectionError("redis down"))

    broken = BrokenLimiter()
    async with client(make_app(broken, calls)) as http:
        response = await http.post("/login")

    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_JSON
    assert calls.count == 0


@pytest.mark.asyncio
async def test_memory_storage_is_ready(limiter: RateLimiter) -> None:
    assert await limiter.ping()


async def test_v2_4_1_a_flood_of_new_addresses_neither_slows_nor_fills_the_memory_storage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """V2.4.1: counters of one-shot addresses are swept at most once per interval
    (not walked on every hit, which made each hit O(counters)), and the sweep
    drops every expired counter, so memory stays bounded."""
    clock = [1_000_000.0]
    monkeypatch.setattr("time.time", lambda: clock[0])
    storage = SweptMemoryStorage(sweep_seconds=10)
    walks = 0
    original = storage._sweep

    def counted() -> None:
        nonlocal walks
        before = storage._next_sweep
        original()
        walks += storage._next_sweep != before

    monkeypatch.setattr(storage, "_sweep", counted)
    for address in range(5000):
        await storage.incr(f"auth:login:ip/10.0.{address // 256}.{address % 256}", expiry=60)
    assert walks == 1
    assert len(storage.expirations) == 5000
    clock[0] += 61  # every counter expired, and the sweep interval passed
    await storage.incr("auth:login:ip/192.0.2.1", expiry=60)
    assert walks == 2
    assert set(storage.storage) == {"auth:login:ip/192.0.2.1"}


def test_state_headers() -> None:
    allowed = RateLimitState(allowed=True, limit=5, remaining=4, reset_after=60, retry_after=0)
    refused = RateLimitState(allowed=False, limit=5, remaining=0, reset_after=7, retry_after=7)
    assert allowed.headers() == {
        "RateLimit-Limit": "5",
        "RateLimit-Remaining": "4",
        "RateLimit-Reset": "60",
    }
    assert refused.headers()["Retry-After"] == "7"


def test_bad_limit_fails_at_declaration() -> None:
    with pytest.raises(ValueError, match="couldn't parse rate limit string"):
        rate_limit("often", scope="test:bad")


def test_unknown_storage_is_refused_without_echoing_the_uri() -> None:
    with pytest.raises(ValueError, match="unsupported rate-limit storage scheme") as excinfo:
        RateLimiter("memcached://user:hunter2@cache:11211")
    assert "hunter2" not in str(excinfo.value)


# --- Redis: several instances, one budget ----------------------------------


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("BASTION_TEST_REDIS_URL")
    if not url:
        pytest.skip("BASTION_TEST_REDIS_URL not set: Redis rate-limit tests need a Redis server")
    return url


@pytest.fixture
def key_prefix() -> str:
    return f"bastion-test-{uuid.uuid4().hex}"


@pytest_asyncio.fixture
async def redis_keys(redis_url: str, key_prefix: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain Redis client; every key under the test's prefix is deleted afterwards."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{key_prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.mark.asyncio
async def test_instances_sharing_redis_share_the_counter(
    redis_url: str, key_prefix: str, redis_keys: redis.asyncio.Redis, calls: Calls
) -> None:
    """V2.4.1, V6.3.1: two instances behind a balancer give one budget, not two."""
    first, second = (RateLimiter(redis_url, key_prefix=key_prefix) for _ in range(2))
    try:
        async with client(make_app(first, calls)) as a, client(make_app(second, calls)) as b:
            statuses = [
                (await a.post("/login")).status_code,
                (await b.post("/login")).status_code,
                (await a.post("/login")).status_code,
                (await b.post("/login")).status_code,
                (await a.post("/login")).status_code,
            ]
        assert statuses == [200, 200, 200, 429, 429]
        assert calls.count == 3
        assert [key async for key in redis_keys.scan_iter(match=f"{key_prefix}:*")]

        await first.reset(LIMIT, "test:login:ip", "198.51.100.1")
        assert (await second.hit(LIMIT, "test:login:ip", "198.51.100.1")).allowed
    finally:
        await first.close()
        await second.close()


@pytest.mark.asyncio
async def test_redis_refusal_carries_retry_after(
    redis_url: str, key_prefix: str, redis_keys: redis.asyncio.Redis
) -> None:
    limiter = RateLimiter(redis_url, key_prefix=key_prefix)
    try:
        assert await limiter.ping()
        states = [await limiter.hit("2/minute", "test:redis", "k") for _ in range(3)]
    finally:
        await limiter.close()

    assert [state.allowed for state in states] == [True, True, False]
    assert [state.remaining for state in states] == [1, 0, 0]
    assert 1 <= states[2].retry_after <= 60
    assert states[2].headers()["Retry-After"] == str(states[2].retry_after)


@pytest.mark.asyncio
async def test_unreachable_redis_is_not_ready(redis_url: str, key_prefix: str) -> None:
    # Port 1 is never Redis: the connection is refused at once.
    limiter = RateLimiter("redis://127.0.0.1:1/0", key_prefix=key_prefix)
    try:
        assert not await limiter.ping()
        with pytest.raises(StorageError):
            await limiter.hit(LIMIT, "test:redis", "k")
    finally:
        await limiter.close()
