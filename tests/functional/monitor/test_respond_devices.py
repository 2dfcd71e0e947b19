"""New-device notices: a sign-in from a network and browser the account has
not used mails its owner (not the admins); the first sign-in ever, a known
device and a failed sign-in mail nothing; the table keeps only keyed hashes,
survives an hmac key rotation and stays bounded per account."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select

from bastion.audit.models import AuditEvent
from bastion.monitor.devices import MAX_DEVICES
from bastion.monitor.models import KnownDevice
from bastion.monitor.signals import Signal
from harness import Harness

ALICE = "alice@example.com"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


async def signals_from_events(harness: Harness) -> list[Signal]:
    """The successful sign-ins as the monitor's tail reads them back: account, address, details."""
    rows = await harness.app.state.db.all(
        select(AuditEvent).where(AuditEvent.tag == "auth:login").order_by(AuditEvent.id)
    )
    return [
        Signal(at=row.at, tag=row.tag, outcome=row.outcome, account_id=row.subject_id or row.actor_id,
               address=row.ip, event_id=row.id, details=row.details or {})
        for row in rows
    ]  # fmt: skip


async def sign_in_from(harness: Harness, ip: str, agent: str) -> None:
    import httpx

    transport = httpx.ASGITransport(app=harness.app, client=(ip, 5000))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        answer = await client.post(
            "/api/v1/auth/login", json={"email": ALICE, "password": "tangerine-orbit-cascade-91"},
            headers={"user-agent": agent},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text


async def notices(harness: Harness) -> list[Any]:
    return [m for m in await harness.mails(ALICE) if "new sign-in" in m["Subject"]]


async def test_a_new_network_or_browser_mails_the_owner(harness: Harness) -> None:
    """V6.3.5 (ASVS 5.0): users are notified of suspicious authentication attempts
    (a sign-in from a new device or network); the notice goes to the user, no admin alert."""
    await harness.user(ALICE)
    devices = harness.app.state.devices
    await sign_in_from(harness, "198.51.100.7", FIREFOX)
    assert await devices.consume(await signals_from_events(harness)) == 0  # the first ever: nothing to compare
    assert await notices(harness) == []

    await sign_in_from(harness, "198.51.100.99", FIREFOX)  # same /24, same family: known
    seen = await signals_from_events(harness)
    assert await devices.consume(seen[-1:]) == 0
    assert await notices(harness) == []

    await sign_in_from(harness, "203.0.113.40", FIREFOX)  # a new network
    assert await devices.consume((await signals_from_events(harness))[-1:]) == 1
    [notice] = await notices(harness)
    text = notice.get_content()
    assert "203.0.113.0/24" in text
    assert "Firefox" in text
    assert "reset it now" in text

    await sign_in_from(harness, "198.51.100.7", CHROME)  # a known network, a new browser
    assert await devices.consume((await signals_from_events(harness))[-1:]) == 1
    assert len(await notices(harness)) == 2
    new_device = await harness.app.state.db.all(select(AuditEvent).where(AuditEvent.tag == "auth:login:new_device"))
    assert len(new_device) == 2
    # Replayed (the tail after a take-over): nothing new.
    assert await devices.consume(await signals_from_events(harness)) == 0
    # Only keyed hashes are stored: no address, no header.
    for row in await harness.app.state.db.all(select(KnownDevice.fingerprint)):
        assert "198.51" not in row.fingerprint
        assert "Firefox" not in row.fingerprint
    # Not an admin alert: nothing else was mailed.
    assert await harness.mails("admin@example.com") == []


async def test_failures_and_other_events_are_ignored(harness: Harness) -> None:
    user = await harness.user(ALICE)
    at = harness.clock.now()
    ignored = [
        Signal(at=at, tag="auth:login", outcome="failure", account_id=user.id, address="203.0.113.1"),
        Signal(at=at, tag="auth:mfa", outcome="success", account_id=user.id, address="203.0.113.2"),
        Signal(at=at, tag="auth:login", outcome="success", account_id=None, address="203.0.113.3"),
        Signal(at=at, tag="http:5xx", outcome="failure", address="203.0.113.4"),
    ]
    assert await harness.app.state.devices.consume(ignored) == 0
    assert await harness.app.state.db.value(select(func.count()).select_from(KnownDevice)) == 0


async def test_a_key_rotation_does_not_make_every_device_new(harness: Harness) -> None:
    user = await harness.user(ALICE)
    devices = harness.app.state.devices
    at = harness.clock.now()
    sign_in = Signal(at=at, tag="auth:login", account_id=user.id, address="198.51.100.7", details={"agent": "Firefox"})
    await devices.consume([sign_in])
    before = devices.hmac.active_kid
    devices.hmac.rotate()
    assert devices.hmac.active_kid != before
    assert await devices.consume([sign_in]) == 0


async def test_the_table_stays_bounded_per_account(harness: Harness) -> None:
    """A stolen password tried from a thousand networks does not grow the table without bound."""
    user = await harness.user(ALICE)
    devices = harness.app.state.devices
    start = harness.clock.now()
    batch = [
        Signal(at=start + dt.timedelta(seconds=n), tag="auth:login", account_id=user.id,
               address=f"10.{n // 256}.{n % 256}.1", details={"agent": "curl"})
        for n in range(MAX_DEVICES + 20)
    ]  # fmt: skip
    assert await devices.consume(batch) == MAX_DEVICES + 19
    count = await harness.app.state.db.value(select(func.count()).select_from(KnownDevice))
    assert count == MAX_DEVICES
