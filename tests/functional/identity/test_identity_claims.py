"""Single-use and counted credentials under concurrency: each is claimed by one
compare-and-set statement (bastion.db.claims), so of many requests racing
with the same credential only as many win as the credential allows.

Every test sends its requests at once (asyncio.gather through the app), on
SQLite and, with BASTION_TEST_DATABASE_URL, on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from harness import NEW_PASSWORD, PASSWORD, Harness

ALICE = "alice@example.com"
RACERS = 12
# Throttles out of the way: these tests are about what the database allows.
LIMITED = ("login", "mfa", "refresh", "register", "verify", "forgot", "reset")
ROOMY = {f"{name}_rate_per_ip": "1000/minute" for name in LIMITED} | {
    "login_rate_per_account": "1000/minute",
    "mail_rate_per_account": "1000/minute",
}


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    return {"auth": ROOMY}


async def _mfa_tokens(harness: Harness, count: int) -> list[str]:
    return [(await harness.login(ALICE))["mfa_token"] for _ in range(count)]


async def _at_once(harness: Harness, path: str, bodies: list[dict[str, str]]) -> Counter[int]:
    responses = await asyncio.gather(*(harness.client.post(path, json=body) for body in bodies))
    return Counter(response.status_code for response in responses)


async def test_concurrent_wrong_codes_cannot_pass_the_mfa_step_cap(harness: Harness) -> None:
    """V6.3.1, V6.6.3: wrong codes racing on one MFA step token all count, so
    after five the step is burnt and even the right code is refused."""
    secret, _ = await harness.with_totp(ALICE)
    (mfa_token,) = await _mfa_tokens(harness, 1)
    wrong = [{"mfa_token": mfa_token, "code": f"{n:06d}"} for n in range(RACERS)]
    wrong = [body for body in wrong if body["code"] != harness.totp(secret)]
    assert await _at_once(harness, "/api/v1/auth/mfa", wrong) == Counter({401: len(wrong)})
    right = {"mfa_token": mfa_token, "code": harness.totp(secret)}
    assert (await harness.client.post("/api/v1/auth/mfa", json=right)).status_code == 401


async def test_one_totp_code_sent_with_many_mfa_steps_opens_one_session(harness: Harness) -> None:
    """V6.5.1: a TOTP code is good once, also when it races itself: its time
    step is claimed in the database, so one of the requests wins."""
    secret, _ = await harness.with_totp(ALICE)
    code = harness.totp(secret)
    bodies = [{"mfa_token": token, "code": code} for token in await _mfa_tokens(harness, RACERS)]
    assert await _at_once(harness, "/api/v1/auth/mfa", bodies) == Counter({200: 1, 401: RACERS - 1})


async def test_one_recovery_code_sent_with_many_mfa_steps_opens_one_session(harness: Harness) -> None:
    """V6.5.2: a recovery code is good once, also when it races itself."""
    _, codes = await harness.with_totp(ALICE)
    bodies = [{"mfa_token": token, "recovery_code": codes[0]} for token in await _mfa_tokens(harness, RACERS)]
    assert await _at_once(harness, "/api/v1/auth/mfa", bodies) == Counter({200: 1, 401: RACERS - 1})


async def test_one_mfa_step_with_many_right_codes_opens_one_session(harness: Harness) -> None:
    """V6.6.3: the MFA step token itself is single-use: different right
    factors (recovery codes) racing on one step open one session."""
    _, codes = await harness.with_totp(ALICE)
    (mfa_token,) = await _mfa_tokens(harness, 1)
    bodies = [{"mfa_token": mfa_token, "recovery_code": code} for code in codes[:4]]
    assert await _at_once(harness, "/api/v1/auth/mfa", bodies) == Counter({200: 1, 401: 3})


async def test_one_reset_token_resets_the_password_once(harness: Harness) -> None:
    """V6.4.1: a reset link is single-use, also when it races itself."""
    await harness.register(ALICE)
    await harness.client.post("/api/v1/auth/password/forgot", json={"email": ALICE})
    token = await harness.token_from_last_mail(ALICE)
    bodies = [{"token": token, "new_password": f"{NEW_PASSWORD}-{n}"} for n in range(RACERS)]
    assert await _at_once(harness, "/api/v1/auth/password/reset", bodies) == Counter({204: 1, 422: RACERS - 1})
    changed = [m for m in await harness.mails(ALICE) if "password was changed" in m["Subject"]]
    assert len(changed) == 1


async def test_one_verification_token_verifies_once(harness: Harness) -> None:
    """V6.4.1 (single-use tokens): the verification link is spent once, also when it races itself."""
    await harness.register(ALICE, verify=False)
    token = await harness.token_from_last_mail(ALICE)
    bodies = [{"token": token}] * RACERS
    assert await _at_once(harness, "/api/v1/auth/verify-email", bodies) == Counter({204: 1, 422: RACERS - 1})
    await harness.login(ALICE, PASSWORD)


async def test_one_refresh_token_rotates_once(harness: Harness) -> None:
    """Refresh rotation (draft-ietf-oauth-security-topics §4.14.2): a refresh
    token racing itself rotates once; the losers look like reuse and end the session."""
    await harness.register(ALICE)
    tokens = await harness.login(ALICE)
    bodies = [{"refresh_token": tokens["refresh_token"]}] * RACERS
    assert await _at_once(harness, "/api/v1/auth/refresh", bodies) == Counter({200: 1, 401: RACERS - 1})
