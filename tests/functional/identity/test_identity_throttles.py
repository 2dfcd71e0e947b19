"""Throttles (bastion.http.throttle) from the attacker's side: one behaviour
when the counters are down, one budget per IPv6 network, aggregated logs.

ASVS 5.0 V2.4.1 (anti-automation) and V6.3.1 (brute force and credential
stuffing): the controls hold when Redis fails (closed, 503, never a 500 and
never open), resume by themselves when it is back, and cannot be multiplied
by spreading requests over the addresses of one IPv6 network.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from examples import reports

from bastion.app import create_app
from bastion.clock import FrozenClock
from bastion.http.ratelimit import RefusalLog
from bastion.http.throttle import address_key
from bastion.settings import Settings
from harness import PASSWORD, Harness
from private_redis import PrivateRedis

ALICE = "alice@example.com"
CLIENT = ("198.51.100.40", 5000)


@pytest.fixture
async def on_redis(make_settings: Callable[..., Settings], private_redis: PrivateRedis) -> AsyncIterator[Harness]:
    settings = make_settings(passwords={"memory_cost_kib": 7168, "time_cost": 1}, redis_url=private_redis.url)
    app = create_app(settings, clock=FrozenClock())
    app.include_router(reports.router)  # an extension's per-route throttle
    transport = httpx.ASGITransport(app=app, client=CLIENT)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="https://testserver") as client,
    ):
        yield Harness(app, client, app.state.clock, settings)


async def _throttled_requests(harness: Harness, api_key: str, session: dict[str, str]) -> dict[str, httpx.Response]:
    """One request to every throttled route: per address, per account, per API key, per route."""
    post = harness.client.post
    key = {"authorization": f"Bearer {api_key}"}
    signed_in = harness.bearer(session)
    return {
        "change-password": await post(
            "/api/v1/me/password", json={"current_password": "wrong", "new_password": PASSWORD}, headers=signed_in
        ),
        "remove-totp": await harness.client.request(
            "DELETE", "/api/v1/me/mfa/totp", json={"code": "123456"}, headers=signed_in
        ),
        "register": await post("/api/v1/auth/register", json={"email": "new@example.com", "password": PASSWORD}),
        "verify-email": await post("/api/v1/auth/verify-email", json={"token": "x" * 43}),
        "login": await post("/api/v1/auth/login", json={"email": ALICE, "password": PASSWORD}),
        "mfa": await post("/api/v1/auth/mfa", json={"mfa_token": "x" * 43, "code": "123456"}),
        "refresh": await post("/api/v1/auth/refresh", json={"refresh_token": "x" * 43}),
        "forgot": await post("/api/v1/auth/password/forgot", json={"email": ALICE}),
        "reset": await post("/api/v1/auth/password/reset", json={"token": "x" * 43, "new_password": PASSWORD}),
        "api-key": await harness.client.get("/api/v1/me", headers=key),
        "extension": await harness.client.get("/api/v1/reports"),
        "records-with-key": await harness.client.get("/api/v1/collections/none/records", headers=key),
    }


async def test_v2_4_1_redis_stopped_mid_run_is_503_on_every_throttled_route_then_resumes(
    on_redis: Harness, private_redis: PrivateRedis
) -> None:
    """V2.4.1, V6.3.1: with the counters unreachable every throttled route
    refuses with a 503 problem (never a 500, never unthrottled); once Redis
    is back the same app serves again, no restart."""
    harness = on_redis
    await harness.register(ALICE)
    tokens = await harness.login(ALICE)
    created = await harness.client.post(
        "/api/v1/me/api-keys", json={"name": "k", "scopes": ["records:*", "me:read"]}, headers=harness.bearer(tokens)
    )
    api_key = created.json()["key"]

    private_redis.stop()
    down = await _throttled_requests(harness, api_key, tokens)
    assert {name: r.status_code for name, r in down.items()} == dict.fromkeys(down, 503)
    assert all(r.headers["content-type"] == "application/problem+json" for r in down.values())
    assert (await harness.client.get("/readyz")).status_code == 503

    private_redis.start()
    up = await _throttled_requests(harness, api_key, tokens)
    assert up["login"].status_code == 200
    assert up["api-key"].status_code == 200
    assert up["extension"].status_code == 401  # throttle passed, then the permission check
    assert up["register"].status_code == 202
    assert 503 not in {r.status_code for r in up.values()}
    assert 500 not in {r.status_code for r in up.values()}
    assert (await harness.client.get("/readyz")).status_code == 200


async def test_v2_4_1_redis_down_is_logged_once_per_interval_not_per_request(
    on_redis: Harness, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    private_redis.stop()
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            response = await on_redis.client.post("/api/v1/auth/password/forgot", json={"email": ALICE})
            assert response.status_code == 503
    lines = [r for r in caplog.records if "throttle_storage_unavailable" in r.getMessage()]
    assert len(lines) == 1


async def test_v2_4_1_thirty_addresses_of_one_ipv6_network_share_one_budget(harness: Harness) -> None:
    """V2.4.1: 30 addresses of one /64 get the per-address budget once
    (10/minute for password reset mail), not thirty times; another /64 has
    its own."""

    async def forgot(address: str, n: int) -> int:
        transport = httpx.ASGITransport(app=harness.app, client=(address, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
            response = await client.post("/api/v1/auth/password/forgot", json={"email": f"u{n}@example.com"})
            return response.status_code

    statuses = [await forgot(f"2001:db8:1:2::{n:x}", n) for n in range(1, 31)]
    assert statuses.count(202) == 10
    assert statuses.count(429) == 20
    assert await forgot("2001:db8:1:3::1", 99) == 202


def test_address_keys_group_ipv6_by_prefix() -> None:
    assert address_key("2001:db8:1:2:aaaa::1", 64) == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2:aaaa::1", 48) == "2001:db8:1::/48"
    assert address_key("2001:db8:1:2:aaaa::1", 128) == "2001:db8:1:2:aaaa::1/128"
    assert address_key("::ffff:198.51.100.7", 64) == "198.51.100.7"
    assert address_key("198.51.100.7", 64) == "198.51.100.7"


def test_refusals_are_logged_once_per_scope_and_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 11 item 17: a flood of 429s is a few log lines, each with how many it stands for."""
    now = [1000.0]
    refusals = RefusalLog(interval=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for _ in range(500):
            refusals.note("rate_limited", "auth:login:ip")
        refusals.note("rate_limited", "auth:login:account")
        now[0] += 10
        refusals.note("rate_limited", "auth:login:ip")
    lines = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg["event"] == "rate_limited"]
    assert [(line["scope"], line["count"]) for line in lines] == [
        ("auth:login:ip", 1),
        ("auth:login:account", 1),
        ("auth:login:ip", 500),  # the 499 held back, and this one
    ]


def test_a_limit_that_does_not_parse_is_refused_when_settings_load(tmp_path: Path) -> None:
    from bastion.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match=r"auth\.login_rate_per_ip"):
        load_settings(tmp_path, auth={"login_rate_per_ip": "often"})
