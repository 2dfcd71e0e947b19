"""Re-authentication (the current password on POST /me/password, the code on
DELETE /me/mfa/totp) from the attacker's side: someone holding a stolen
session guesses at the password or the second factor.

ASVS 5.0 V6.3.1 (brute force): re-authentication gets the sign-in throttles
(sharing their budget) and every wrong guess counts towards the account
lockout, also when the guesses race each other (V7.5.1: the re-authentication
itself must not be a brute-force oracle).
"""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from bastion.audit.models import AuditEvent
from bastion.identity.throttle import LOGIN_BY_ACCOUNT, LOGIN_BY_ADDRESS, MFA_BY_ADDRESS, account_key
from bastion.security import totp_at
from harness import ADDRESS, NEW_PASSWORD, PASSWORD, Harness

ALICE = "alice@example.com"
CLIENT = ADDRESS


async def tags(harness: Harness) -> list[str]:
    return [row.tag for row in await harness.app.state.db.all(select(AuditEvent.tag).order_by(AuditEvent.id))]


async def lift_throttles(harness: Harness) -> None:
    """Forget the counters, so what is left to refuse is the lockout alone."""
    state = harness.app.state
    for throttle, key in (
        (LOGIN_BY_ACCOUNT, account_key(ALICE)),
        (LOGIN_BY_ADDRESS, CLIENT),
        (MFA_BY_ADDRESS, CLIENT),
    ):
        await throttle.clear(state.rate_limiter, state.settings, key)


def change(harness: Harness, session: dict[str, str], current: str):  # type: ignore[no-untyped-def]
    return harness.client.post(
        "/api/v1/me/password",
        json={"current_password": current, "new_password": NEW_PASSWORD},
        headers=harness.bearer(session),
    )


async def test_v6_3_1_current_password_guesses_are_throttled_with_sign_in(harness: Harness) -> None:
    """V6.3.1: the per-account sign-in budget (10/minute) covers
    re-authentication too, so a stolen session buys no extra guesses: the
    11th guess is a 429, and so is a sign-in after it."""
    await harness.register(ALICE)
    session = await harness.login(ALICE)
    await lift_throttles(harness)
    statuses = [(await change(harness, session, f"wrong-guess-{n:03d}")).status_code for n in range(11)]
    assert statuses == [401] * 10 + [429]
    login = await harness.client.post("/api/v1/auth/login", json={"email": ALICE, "password": PASSWORD})
    assert login.status_code == 429


async def test_v6_3_1_concurrent_wrong_current_passwords_all_count_and_lock(harness: Harness) -> None:
    """V6.3.1: ten wrong current passwords at once are all counted (in SQL),
    lock the account, and then even the right one is refused, on
    re-authentication and on sign-in."""
    await harness.register(ALICE)
    session = await harness.login(ALICE)
    await lift_throttles(harness)
    guesses = [change(harness, session, f"racing-guess-{n:04d}") for n in range(10)]
    assert {response.status_code for response in await asyncio.gather(*guesses)} == {401}
    assert "auth:lockout" in await tags(harness)
    await lift_throttles(harness)
    assert (await change(harness, session, PASSWORD)).status_code == 401
    login = await harness.client.post("/api/v1/auth/login", json={"email": ALICE, "password": PASSWORD})
    assert login.status_code == 401


async def test_v6_3_1_concurrent_wrong_codes_on_totp_removal_count_and_lock(harness: Harness) -> None:
    """V6.3.1: guessing the code that removes TOTP is throttled and counted
    like sign-in: ten wrong codes at once lock the account, after which the
    right code does not remove the second factor."""
    await harness.register(ALICE)
    session = await harness.login(ALICE)
    secret = (await harness.client.post("/api/v1/me/mfa/totp", headers=harness.bearer(session))).json()["secret"]
    step = int(harness.clock.now().timestamp()) // 30
    confirmed = await harness.client.post(
        "/api/v1/me/mfa/totp/confirm", json={"code": totp_at(secret, step)}, headers=harness.bearer(session)
    )
    assert confirmed.status_code == 200
    await lift_throttles(harness)
    right = totp_at(secret, step + 1)
    wrong = [f"{(int(right) + n) % 1_000_000:06d}" for n in range(1, 11)]
    guesses = [
        harness.client.request("DELETE", "/api/v1/me/mfa/totp", json={"code": code}, headers=harness.bearer(session))
        for code in wrong
    ]
    assert {response.status_code for response in await asyncio.gather(*guesses)} == {401}
    assert "auth:lockout" in await tags(harness)
    await lift_throttles(harness)
    harness.clock.advance(seconds=30)
    removal = await harness.client.request(
        "DELETE", "/api/v1/me/mfa/totp", json={"code": right}, headers=harness.bearer(session)
    )
    assert removal.status_code == 401
    me = await harness.client.get("/api/v1/me", headers=harness.bearer(session))
    assert me.json()["mfa_enabled"] is True


async def test_totp_removal_guesses_are_throttled_per_address(harness: Harness) -> None:
    await harness.register(ALICE)
    session = await harness.login(ALICE)
    secret = (await harness.client.post("/api/v1/me/mfa/totp", headers=harness.bearer(session))).json()["secret"]
    step = int(harness.clock.now().timestamp()) // 30
    await harness.client.post(
        "/api/v1/me/mfa/totp/confirm", json={"code": totp_at(secret, step)}, headers=harness.bearer(session)
    )
    statuses = [
        (
            await harness.client.request(
                "DELETE", "/api/v1/me/mfa/totp", json={"code": "000000"}, headers=harness.bearer(session)
            )
        ).status_code
        for _ in range(11)
    ]
    assert statuses[-1] == 429
