"""Blocked addresses and networks: refused before anything else runs on the
public listener, by every app sharing the database within the refresh
bound, lifted on removal and on expiry; the admin API and its audit trail;
the bounds on automatic blocks (cap, networks only when allowed, never a
trusted proxy)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from bastion.app import create_app
from bastion.audit.models import AuditEvent
from bastion.monitor.signals import Fired, Signal
from bastion.network.blocks import AUTO, InvalidNetwork, network_of, parse_network
from bastion.network.models import Block
from harness import Harness, open_harness

ATTACKER = "203.0.113.66"


@asynccontextmanager
async def from_address(app: Any, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(ip, 5000))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        yield client


def fired(address: str | None, *, actions: tuple[str, ...] = ("block_address",), block_for: float = 900.0,
          account: uuid.UUID | None = None, rule: str = "failures-per-address") -> Fired:  # fmt: skip
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    signal = Signal(at=now, tag="auth:login", outcome="failure", address=address, account_id=account)
    return Fired(
        rule=rule, severity="high", group_key=f"address:{address}", count=6, window_seconds=10.0,
        first_seen=now, last_seen=now, actions=actions, signal=signal, block_for=block_for,
    )  # fmt: skip


async def tags(harness: Harness, tag: str) -> list[Any]:
    return await harness.app.state.db.all(select(AuditEvent).where(AuditEvent.tag == tag).order_by(AuditEvent.id))


def test_parse_network_refuses_what_is_not_one() -> None:
    assert str(parse_network("203.0.113.7")) == "203.0.113.7/32"
    assert str(parse_network("2001:db8::/64")) == "2001:db8::/64"
    # An IPv4-mapped address is its IPv4 address: a v4 block must not be sidestepped.
    assert str(parse_network("::ffff:203.0.113.7")) == "203.0.113.7/32"
    assert str(network_of("198.51.100.77", 24)) == "198.51.100.0/24"
    for bad in ("203.0.113.7/24", "300.1.1.1", "example.com", "", "1.2.3.4/33", "1.2.3.4; DROP TABLE blocks"):
        with pytest.raises(InvalidNetwork):
            parse_network(bad)


async def test_a_blocked_address_is_refused_and_others_are_not(
    harness: Harness, admin_client: httpx.AsyncClient
) -> None:
    """V2.4.1, V6.3.1: an operator's block refuses the
    address on every public route with the generic 403, before routing or
    sign-in throttles run; other addresses and the admin plane are untouched."""
    admin = await harness.admin()
    created = await admin_client.post(
        "/admin/api/v1/blocks", json={"network": ATTACKER, "duration": "15m", "reason": "scanner"},
        headers=harness.bearer(admin),
    )  # fmt: skip
    assert created.status_code == 201, created.text
    block = created.json()
    assert block["network"] == f"{ATTACKER}/32"
    assert block["source"] == "manual"
    async with from_address(harness.app, ATTACKER) as attacker:
        for method, path in (("GET", "/healthz"), ("POST", "/api/v1/auth/login"), ("GET", "/no/such/path")):
            refused = await attacker.request(method, path, json={"email": "a@example.com", "password": "x"})
            assert refused.status_code == 403, (path, refused.text)
            assert refused.json()["type"].endswith("/403")
    assert (await harness.client.get("/healthz")).status_code == 200
    # No sign-in was attempted: the refusal came before the route.
    assert [e for e in await tags(harness, "auth:login") if e.outcome != "success"] == []
    listed = await admin_client.get("/admin/api/v1/blocks", headers=harness.bearer(admin))
    assert [b["id"] for b in listed.json()] == [block["id"]]

    removed = await admin_client.delete(f"/admin/api/v1/blocks/{block['id']}", headers=harness.bearer(admin))
    assert removed.status_code == 204
    async with from_address(harness.app, ATTACKER) as attacker:
        assert (await attacker.get("/healthz")).status_code == 200
    assert (
        await admin_client.delete(f"/admin/api/v1/blocks/{block['id']}", headers=harness.bearer(admin))
    ).status_code == 404
    added, gone = await tags(harness, "monitor:block:add"), await tags(harness, "monitor:block:remove")
    assert len(added) == 1
    assert len(gone) == 1
    assert added[0].details["network"] == f"{ATTACKER}/32"
    assert gone[0].details["block_id"] == block["id"]


async def test_a_network_block_covers_its_addresses_and_ipv4_mapped_forms(harness: Harness) -> None:
    await add(harness, "203.0.113.0/24")
    for ip in ("203.0.113.1", "203.0.113.254", "::ffff:203.0.113.9"):
        async with from_address(harness.app, ip) as client:
            assert (await client.get("/healthz")).status_code == 403, ip
    async with from_address(harness.app, "203.0.114.1") as client:
        assert (await client.get("/healthz")).status_code == 200


async def add(harness: Harness, network: str, seconds: float = 600.0) -> None:
    from bastion.monitor.actions import add_block
    from factories import unit_of_work

    async with unit_of_work(harness.app) as uow:
        await add_block(uow, harness.app.state.blocks, harness.clock, parse_network(network), for_seconds=seconds,
                        reason="test")  # fmt: skip
    harness.app.state.blocks.forget()


async def test_a_block_ends_when_it_expires(harness: Harness) -> None:
    await add(harness, ATTACKER, seconds=60)
    async with from_address(harness.app, ATTACKER) as attacker:
        assert (await attacker.get("/healthz")).status_code == 403
        harness.clock.advance(seconds=61)
        assert (await attacker.get("/healthz")).status_code == 200


async def test_the_admin_api_refuses_bad_input_and_stores_nothing(
    harness: Harness, admin_client: httpx.AsyncClient
) -> None:
    """Bad input is a 422 and writes nothing; without MFA or the permission, 403."""
    admin = await harness.admin()
    for body in (
        {"network": "203.0.113.7/24", "duration": "1h"},
        {"network": "not-an-address", "duration": "1h"},
        {"network": ATTACKER, "duration": "forever"},
        {"network": ATTACKER, "duration": "-5m"},
        {"network": ATTACKER},
        {"network": ATTACKER, "duration": "1h", "source": "auto"},
    ):
        response = await admin_client.post("/admin/api/v1/blocks", json=body, headers=harness.bearer(admin))
        assert response.status_code == 422, (body, response.text)
    single_factor = await harness.admin("other-admin@example.com", mfa=False)
    user = await harness.signed_in("user@example.com")
    for who in (single_factor, user):
        response = await admin_client.post(
            "/admin/api/v1/blocks", json={"network": ATTACKER, "duration": "1h"}, headers=harness.bearer(who)
        )
        assert response.status_code in (401, 403)
    # The public listener does not serve the admin API at all.
    assert (await harness.client.get("/admin/api/v1/blocks", headers=harness.bearer(admin))).status_code == 404
    assert await harness.app.state.db.value(select(func.count()).select_from(Block)) == 0


async def test_another_app_on_the_database_refuses_within_the_refresh_bound(harness: Harness) -> None:
    """A second app (its own process-local cache, its own connections) sees a
    block the first one adds within ``incident.state_refresh`` plus one query:
    the 1 s bound. Real time here: the bound is the point."""
    other = create_app(harness.settings, clock=harness.clock)
    async with other.router.lifespan_context(other), from_address(other, ATTACKER) as attacker:
        assert (await attacker.get("/healthz")).status_code == 200  # its cache now holds "nothing blocked"
        await add(harness, ATTACKER)
        started = time.monotonic()
        deadline = started + 5.0
        while (await attacker.get("/healthz")).status_code != 403:
            assert time.monotonic() < deadline, "the other app never refused the blocked address"
        latency = time.monotonic() - started
    assert latency < 1.0, f"refused after {latency:.3f} s"


async def test_automatic_blocks_are_bounded(harness: Harness) -> None:
    """Defaults must not hand an attacker a denial of service: automatic
    blocks cover one address for a bounded time, networks only when allowed,
    never a trusted proxy (everyone behind it), and at most
    ``monitor.max_auto_blocks`` are in force."""
    responder = harness.app.state.responder
    assert await responder.act(fired(ATTACKER, block_for=90 * 86400)) == ["block_address"]
    row = (await harness.app.state.blocks.live(harness.app.state.db))[0]
    assert row.network == f"{ATTACKER}/32"
    assert row.source == AUTO
    assert row.rule == "failures-per-address"
    assert row.expires_at is not None
    assert row.expires_at - harness.clock.now() <= dt.timedelta(days=7)
    # Firing again adds nothing.
    assert await responder.act(fired(ATTACKER)) == []
    # A network only when monitor.auto_block_networks says so (off by default).
    assert await responder.act(fired("198.51.100.9", actions=("block_network",))) == []
    # Without an address, or with garbage, nothing.
    assert await responder.act(fired(None)) == []
    assert await responder.act(fired("not-an-ip")) == []
    async with from_address(harness.app, ATTACKER) as attacker:
        assert (await attacker.get("/healthz")).status_code == 403
    assert (await harness.client.get("/healthz")).status_code == 200


@pytest.mark.parametrize("harness_settings", [{"monitor": {"max_auto_blocks": 3, "auto_block_networks": True},
                                               "server": {"trusted_proxies": ["10.0.0.0/8"]}}])  # fmt: skip
async def test_the_cap_and_the_trusted_proxies_hold(harness: Harness) -> None:
    responder = harness.app.state.responder
    assert await responder.act(fired("10.1.2.3")) == []  # a trusted proxy
    for n in range(5):
        await responder.act(fired(f"203.0.113.{n + 1}"))
    live = await harness.app.state.blocks.live(harness.app.state.db)
    assert len(live) == 3
    denied = [e for e in await tags(harness, "monitor:block:add") if e.outcome == "denied"]
    assert len(denied) == 2
    assert all(e.details["reason"] == "cap" for e in denied)
    # A manual block is not counted against, nor stopped by, the cap.
    await add(harness, "192.0.2.1")
    assert len(await harness.app.state.blocks.live(harness.app.state.db)) == 4
    assert (await harness.client.get("/healthz")).status_code == 200


@pytest.mark.parametrize("harness_settings", [{"monitor": {"auto_block_networks": True}}])
async def test_network_blocks_when_allowed(harness: Harness) -> None:
    responder = harness.app.state.responder
    assert await responder.act(fired("198.51.100.9", actions=("block_network",))) == ["block_network"]
    assert await responder.act(fired("2001:db8:1:2:3::9", actions=("block_network",))) == ["block_network"]
    networks = {b.network for b in await harness.app.state.blocks.live(harness.app.state.db)}
    assert networks == {"198.51.100.0/24", "2001:db8:1:2::/64"}
    # The harness's own address is in that /24: refused now.
    assert (await harness.client.get("/healthz")).status_code == 403


@pytest.mark.parametrize("harness_settings", [{"monitor": {"max_auto_blocks": 3}}])
async def test_the_cap_holds_when_processes_block_at_once(harness: Harness) -> None:
    """V2.4.1 (bounded automatic responses): three apps (each its own connections, as separate
    processes) block 24 distinct addresses at once; no more than ``monitor.max_auto_blocks``
    automatic blocks come into force, and every other attempt is audited as refused by the cap."""
    async with contextlib.AsyncExitStack() as stack:
        apps = [harness.app]
        for _ in range(2):
            apps.append((await stack.enter_async_context(open_harness(harness.settings, harness.clock))).app)
        taken = await asyncio.gather(
            *(apps[n % len(apps)].state.responder.act(fired(f"203.0.113.{n + 1}")) for n in range(24))
        )
    live = [b for b in await harness.app.state.blocks.live(harness.app.state.db) if b.source == AUTO]
    assert len(live) == 3
    assert sum(t == ["block_address"] for t in taken) == 3
    denied = [e for e in await tags(harness, "monitor:block:add") if e.outcome == "denied"]
    assert len(denied) == 21
