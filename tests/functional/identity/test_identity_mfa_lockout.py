"""Second-factor guessing is counted per account, not only per address: an
attacker who holds the password and many addresses still gets the account
locked, with the same escalating lockout as wrong passwords."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from sqlalchemy import select

from bastion.audit.models import AuditEvent
from harness import PASSWORD, Harness

ALICE = "alice@example.com"


@asynccontextmanager
async def from_address(harness: Harness, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=harness.app, client=(ip, 5000))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        yield client


async def _challenge(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/v1/auth/login", json={"email": ALICE, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return str(response.json()["mfa_token"])


async def test_wrong_codes_from_many_addresses_lock_the_account(harness: Harness) -> None:
    """V6.3.1, V6.6.3: wrong TOTP codes from ever new addresses all count
    against the account (the right password does not clear that count), lock
    it at the threshold, and while it is locked the right code is refused too."""
    secret, _ = await harness.with_totp(ALICE)
    spare = None
    for n in range(3):  # 3 addresses x 4 wrong codes: past the threshold of 10
        async with from_address(harness, f"203.0.113.{n + 1}") as attacker:
            mfa_token = await _challenge(attacker)
            spare = spare or await _challenge(attacker)  # kept for after the lockout
            for guess in range(4):
                body = {"mfa_token": mfa_token, "code": f"{n}{guess}0000"}
                assert (await attacker.post("/api/v1/auth/mfa", json=body)).status_code == 401
    events = [row.tag for row in await harness.app.state.db.all(select(AuditEvent.tag))]
    assert events.count("auth:lockout") == 1
    assert any("locked" in m["Subject"] for m in await harness.mails(ALICE))

    async with from_address(harness, "203.0.113.99") as attacker:
        right = {"mfa_token": spare, "code": harness.totp(secret)}
        refused = await attacker.post("/api/v1/auth/mfa", json=right)
        assert refused.status_code == 401
        assert "access_token" not in refused.text
        login = await attacker.post("/api/v1/auth/login", json={"email": ALICE, "password": PASSWORD})
        assert login.status_code == 401

        # The lockout ends by itself; then the owner gets in with both factors.
        harness.clock.advance(seconds=61)
        body = {"mfa_token": await _challenge(attacker), "code": harness.totp(secret)}
        assert (await attacker.post("/api/v1/auth/mfa", json=body)).status_code == 200


async def test_a_right_second_factor_clears_the_count(harness: Harness) -> None:
    """The owner's own typos do not add up across sign-ins: a right code clears the count."""
    secret, _ = await harness.with_totp(ALICE)
    for n in range(3):
        async with from_address(harness, f"198.51.100.{n + 100}") as owner:  # each within its address's budget
            mfa_token = await _challenge(owner)
            for guess in range(4):
                wrong = {"mfa_token": mfa_token, "code": f"9{guess}9999"}
                assert (await owner.post("/api/v1/auth/mfa", json=wrong)).status_code == 401
            right = {"mfa_token": mfa_token, "code": harness.totp(secret)}
            assert (await owner.post("/api/v1/auth/mfa", json=right)).status_code == 200
        harness.clock.advance(seconds=30)
