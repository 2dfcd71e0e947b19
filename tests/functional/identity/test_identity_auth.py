"""Accounts, sign-in, MFA and sessions through the HTTP API, including the
attacker's side (DESIGN.md §4, issue "Identity and sessions")."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from bastion.audit.models import AuditEvent
from bastion.security import hash_token, totp_at
from harness import NEW_PASSWORD, PASSWORD, Harness

ALICE = "alice@example.com"


async def tags(harness: Harness) -> list[str]:
    return [row.tag for row in await harness.app.state.db.all(select(AuditEvent.tag).order_by(AuditEvent.id))]


async def test_register_verify_login_me(harness: Harness) -> None:
    """V6.3.1 happy path; V6.4.1 verification link is single-use."""
    await harness.register(ALICE)
    tokens = await harness.login(ALICE)
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 600
    me = await harness.client.get("/api/v1/me", headers=harness.bearer(tokens))
    assert me.status_code == 200
    assert me.json()["email"] == ALICE
    assert me.json()["roles"] == ["user"]
    assert me.json()["mfa_enabled"] is False
    assert "auth:register" in await tags(harness)
    assert "auth:email:verify" in await tags(harness)


async def test_email_is_case_insensitive_and_unique(harness: Harness) -> None:
    await harness.register(ALICE)
    await harness.register("ALICE@Example.COM", verify=False)  # same 202, no second account
    registered = select(func.count()).select_from(AuditEvent).where(AuditEvent.tag == "auth:register")
    assert await harness.app.state.db.value(registered) == 1
    assert (await harness.login("Alice@EXAMPLE.com"))["access_token"]


async def test_unverified_account_cannot_sign_in(harness: Harness) -> None:
    await harness.register(ALICE, verify=False)
    response = await harness.client.post("/api/v1/auth/login", json={"email": ALICE, "password": PASSWORD})
    assert response.status_code == 403


@pytest.mark.parametrize(
    "password",
    ["short-pw", "password123456", "alice@example.com!", "Bastion-Bastion-1"],
)
async def test_weak_passwords_are_refused(harness: Harness, password: str) -> None:
    """V6.2.1 length, V6.2.4 common passwords, V6.2.11 context words."""
    response = await harness.client.post("/api/v1/auth/register", json={"email": ALICE, "password": password})
    assert response.status_code == 422
    assert password not in response.text
    assert await harness.mails(ALICE) == []


async def test_enumeration_register_forgot_login_answer_alike(harness: Harness) -> None:
    """V6.3.8: responses do not reveal whether an account exists."""
    await harness.user(ALICE)

    async def answer(path: str, body: dict[str, str]) -> tuple[int, object]:
        response = await harness.client.post(path, json=body)
        payload = response.json()
        if isinstance(payload, dict):
            payload.pop("request_id", None)
        return response.status_code, payload

    for path, known, unknown in [
        (
            "/api/v1/auth/register",
            {"email": ALICE, "password": NEW_PASSWORD},
            {"email": "nobody@example.com", "password": NEW_PASSWORD},
        ),
        ("/api/v1/auth/password/forgot", {"email": ALICE}, {"email": "nobody@example.com"}),
        (
            "/api/v1/auth/login",
            {"email": ALICE, "password": "wrong-password-123"},
            {"email": "nobody@example.com", "password": "wrong-password-123"},
        ),
    ]:
        assert await answer(path, known) == await answer(path, unknown), path
    # The owner of the taken address hears about the attempt instead.
    subjects = [m["Subject"] for m in await harness.mails(ALICE)]
    assert any("register" in s.lower() for s in subjects), subjects


async def test_refresh_rotates_and_reuse_revokes_the_family(harness: Harness) -> None:
    """V7.2.4 / V9.x: single-use refresh tokens; reuse detection revokes the session."""
    await harness.user(ALICE)
    first = await harness.login(ALICE)
    second = (await harness.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()
    assert second["refresh_token"] != first["refresh_token"]
    third = (await harness.client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})).json()

    # An attacker replays the stolen first token: refused, and the family dies.
    replay = await harness.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    assert (
        await harness.client.post("/api/v1/auth/refresh", json={"refresh_token": third["refresh_token"]})
    ).status_code == 401
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(third))).status_code == 401
    assert "auth:refresh:reuse_detected" in await tags(harness)


async def test_logout_takes_effect_on_the_next_request(harness: Harness) -> None:
    """V7.4.1: a revoked session's access token is refused at once."""
    await harness.user(ALICE)
    tokens = await harness.login(ALICE)
    assert (await harness.client.post("/api/v1/auth/logout", headers=harness.bearer(tokens))).status_code == 204
    response = await harness.client.get("/api/v1/me", headers=harness.bearer(tokens))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert (
        await harness.client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    ).status_code == 401


async def test_sessions_list_and_revoke_other_device(harness: Harness) -> None:
    """V7.5.2: users can see and end their sessions; not someone else's."""
    await harness.user(ALICE)
    await harness.user("bob@example.com")
    laptop, phone = await harness.login(ALICE), await harness.login(ALICE)
    bob = await harness.login("bob@example.com")
    listed = (await harness.client.get("/api/v1/me/sessions", headers=harness.bearer(laptop))).json()
    assert len(listed) == 2
    assert sum(s["current"] for s in listed) == 1
    phone_id = next(s["id"] for s in listed if not s["current"])
    assert (
        await harness.client.delete(f"/api/v1/me/sessions/{phone_id}", headers=harness.bearer(bob))
    ).status_code == 404
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(phone))).status_code == 200
    assert (
        await harness.client.delete(f"/api/v1/me/sessions/{phone_id}", headers=harness.bearer(laptop))
    ).status_code == 204
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(phone))).status_code == 401
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(laptop))).status_code == 200


async def test_access_token_expires(harness: Harness) -> None:
    await harness.user(ALICE)
    tokens = await harness.login(ALICE)
    harness.clock.advance(seconds=601)
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(tokens))).status_code == 401


async def test_password_reset_single_use_and_expiring(harness: Harness) -> None:
    """V6.4.1, V6.4.2: reset tokens are single-use, expire, and end every session."""
    await harness.user(ALICE)
    old = await harness.login(ALICE)
    await harness.client.post("/api/v1/auth/password/forgot", json={"email": ALICE})
    token = await harness.token_from_last_mail(ALICE)
    reset = {"token": token, "new_password": NEW_PASSWORD}
    assert (await harness.client.post("/api/v1/auth/password/reset", json=reset)).status_code == 204
    assert (await harness.client.post("/api/v1/auth/password/reset", json=reset)).status_code == 422  # reused
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(old))).status_code == 401
    assert (
        await harness.client.post("/api/v1/auth/login", json={"email": ALICE, "password": PASSWORD})
    ).status_code == 401
    await harness.login(ALICE, NEW_PASSWORD)

    await harness.client.post("/api/v1/auth/password/forgot", json={"email": ALICE})
    late = await harness.token_from_last_mail(ALICE)
    harness.clock.advance(minutes=31)
    expired = await harness.client.post("/api/v1/auth/password/reset", json={"token": late, "new_password": PASSWORD})
    assert expired.status_code == 422


async def test_password_change_revokes_other_sessions(harness: Harness) -> None:
    await harness.user(ALICE)
    here, elsewhere = await harness.login(ALICE), await harness.login(ALICE)
    wrong = await harness.client.post(
        "/api/v1/me/password",
        json={"current_password": "not-my-password-1", "new_password": NEW_PASSWORD},
        headers=harness.bearer(here),
    )
    assert wrong.status_code == 401
    ok = await harness.client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=harness.bearer(here),
    )
    assert ok.status_code == 204
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(here))).status_code == 200
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(elsewhere))).status_code == 401


async def test_brute_force_never_yields_a_token_and_locks(harness: Harness) -> None:
    """V6.3.1: 50 wrong passwords are throttled and lock the account; the owner is told."""
    await harness.user(ALICE)
    statuses = []
    for attempt in range(50):
        response = await harness.client.post(
            "/api/v1/auth/login", json={"email": ALICE, "password": f"guess-number-{attempt:04d}"}
        )
        assert "access_token" not in response.text
        statuses.append(response.status_code)
    assert set(statuses) <= {401, 429}
    assert 429 in statuses  # per-account throttle kicked in before hashing
    # Locked: even the right password is refused (once the throttles are lifted).
    await _lift_throttles(harness)
    response = await harness.client.post("/api/v1/auth/login", json={"email": ALICE, "password": PASSWORD})
    assert response.status_code == 401
    assert "auth:lockout" in await tags(harness)
    assert any("lock" in m["Subject"].lower() for m in await harness.mails(ALICE))
    # The lockout ends by itself, or earlier with a reset.
    harness.clock.advance(seconds=61)
    await _lift_throttles(harness)
    await harness.login(ALICE)


async def test_other_spellings_of_an_address_share_its_throttle(harness: Harness) -> None:
    """V6.3.1: a display name, another case or a quoted form of the same address
    is the same account to the per-account throttle, so it buys no extra guesses."""
    await harness.user(ALICE)
    for attempt in range(10):
        await harness.client.post("/api/v1/auth/login", json={"email": ALICE, "password": f"guess-{attempt:04d}"})
    for spelling in ("x <alice@example.com>", "ALICE@EXAMPLE.COM", "Alice <Alice@Example.COM>", " alice@example.com"):
        response = await harness.client.post("/api/v1/auth/login", json={"email": spelling, "password": PASSWORD})
        assert response.status_code == 429, (spelling, response.status_code)


async def test_a_spent_account_is_refused_before_the_route_runs(harness: Harness) -> None:
    """V6.3.1, V2.4.1: once an account's budget is spent, an attempt is refused
    before routing: a body the route would reject (422: unknown field) gets the
    429 too, while another account and other routes are untouched."""
    await harness.user(ALICE)
    await harness.user("bob@example.com")
    for attempt in range(10):
        await harness.client.post("/api/v1/auth/login", json={"email": ALICE, "password": f"guess-{attempt:04d}"})
    extra = await harness.client.post(
        "/api/v1/auth/login", json={"email": "x <ALICE@example.com>", "password": "p", "admin": True}
    )
    assert extra.status_code == 429
    assert extra.headers["content-type"] == "application/problem+json"
    assert int(extra.headers["retry-after"]) >= 1
    assert "x-request-id" in extra.headers
    other = await harness.client.post("/api/v1/auth/login", json={"email": "bob@example.com", "password": "wrong-0"})
    assert other.status_code == 401
    shape = await harness.client.post("/api/v1/auth/login", json={"email": "bob@example.com", "password": "p", "x": 1})
    assert shape.status_code == 422  # not spent: the route decides, as before
    assert (await harness.login("bob@example.com"))["access_token"]


async def test_concurrent_wrong_guesses_are_all_counted(harness: Harness) -> None:
    """V6.3.1: guesses racing each other cannot overwrite each other's failure
    count, so ten at once still lock the account."""
    await harness.user(ALICE)
    guesses = [
        harness.client.post("/api/v1/auth/login", json={"email": ALICE, "password": f"racing-guess-{n:04d}"})
        for n in range(10)
    ]
    assert {response.status_code for response in await asyncio.gather(*guesses)} == {401}
    assert "auth:lockout" in await tags(harness)
    await _lift_throttles(harness)
    assert (
        await harness.client.post("/api/v1/auth/login", json={"email": ALICE, "password": PASSWORD})
    ).status_code == 401


async def _lift_throttles(harness: Harness) -> None:
    limiter = harness.app.state.rate_limiter
    await limiter.reset("10/minute", "auth:login:account", hash_token(ALICE))
    await limiter.reset("30/minute", "auth:login:ip", harness.address)


async def _enrol_totp(harness: Harness, tokens: dict[str, str]) -> tuple[str, list[str]]:
    enrol = (await harness.client.post("/api/v1/me/mfa/totp", headers=harness.bearer(tokens))).json()
    assert enrol["otpauth_uri"].startswith("otpauth://totp/")
    secret = enrol["secret"]
    confirm = await harness.client.post(
        "/api/v1/me/mfa/totp/confirm", json={"code": totp_at(secret, _step(harness))}, headers=harness.bearer(tokens)
    )
    assert confirm.status_code == 200, confirm.text
    codes = confirm.json()["recovery_codes"]
    assert len(codes) == 10
    return secret, codes


def _step(harness: Harness) -> int:
    return int(harness.clock.now().timestamp()) // 30


async def test_totp_login_replay_and_recovery_codes(harness: Harness) -> None:
    """V6.5.1 (OTP single use), V6.5.2 (recovery codes single use), V6.6.x."""
    await harness.user(ALICE)
    secret, codes = await _enrol_totp(harness, await harness.login(ALICE))

    challenge = await harness.login(ALICE)
    assert challenge["mfa_required"] is True
    assert "access_token" not in challenge
    harness.clock.advance(seconds=30)
    code = totp_at(secret, _step(harness))
    ok = await harness.client.post("/api/v1/auth/mfa", json={"mfa_token": challenge["mfa_token"], "code": code})
    assert ok.status_code == 200
    # The MFA step token is single-use, and the same code cannot be replayed.
    again = await harness.client.post("/api/v1/auth/mfa", json={"mfa_token": challenge["mfa_token"], "code": code})
    assert again.status_code == 401
    fresh = await harness.login(ALICE)
    replay = await harness.client.post("/api/v1/auth/mfa", json={"mfa_token": fresh["mfa_token"], "code": code})
    assert replay.status_code == 401

    recovery = await harness.client.post(
        "/api/v1/auth/mfa", json={"mfa_token": fresh["mfa_token"], "recovery_code": codes[0]}
    )
    assert recovery.status_code == 200
    reuse = await harness.client.post(
        "/api/v1/auth/mfa", json={"mfa_token": (await harness.login(ALICE))["mfa_token"], "recovery_code": codes[0]}
    )
    assert reuse.status_code == 401


async def test_mfa_token_burns_after_five_wrong_codes(harness: Harness) -> None:
    await harness.user(ALICE)
    secret, _ = await _enrol_totp(harness, await harness.login(ALICE))
    challenge = await harness.login(ALICE)
    for wrong in ("000000", "111111", "222222", "333333", "444444"):
        body = {"mfa_token": challenge["mfa_token"], "code": wrong}
        assert (await harness.client.post("/api/v1/auth/mfa", json=body)).status_code == 401
    harness.clock.advance(seconds=30)
    right = {"mfa_token": challenge["mfa_token"], "code": totp_at(secret, _step(harness))}
    assert (await harness.client.post("/api/v1/auth/mfa", json=right)).status_code == 401


async def test_disabling_totp_needs_a_fresh_second_factor(harness: Harness) -> None:
    await harness.user(ALICE)
    tokens = await harness.login(ALICE)
    secret, _ = await _enrol_totp(harness, tokens)
    refused = await harness.client.request(
        "DELETE", "/api/v1/me/mfa/totp", json={"code": "123456"}, headers=harness.bearer(tokens)
    )
    assert refused.status_code == 401
    harness.clock.advance(seconds=30)
    removed = await harness.client.request(
        "DELETE", "/api/v1/me/mfa/totp", json={"code": totp_at(secret, _step(harness))}, headers=harness.bearer(tokens)
    )
    assert removed.status_code == 204
    assert "access_token" in await harness.login(ALICE)


async def test_totp_secret_is_encrypted_at_rest(harness: Harness) -> None:
    """V11.x / V6.5.x: the TOTP seed is not stored in plaintext."""
    await harness.user(ALICE)
    tokens = await harness.login(ALICE)
    secret, _ = await _enrol_totp(harness, tokens)
    from bastion.identity.models import User

    stored = await harness.app.state.db.value(select(User.totp_secret))
    assert stored is not None
    assert secret.encode() not in stored


async def test_privileged_routes_need_a_two_factor_session(harness: Harness) -> None:
    """V6.3.3 (MFA for privileged access): an extension route declared with
    require_mfa refuses password-only sessions."""
    from fastapi import Depends

    from bastion.access import Permission, Principal, require_mfa

    @harness.app.get("/test/privileged")
    async def privileged(caller: Principal = Depends(require_mfa(Permission.API_KEYS))) -> dict[str, str]:  # noqa: B008
        return {"user": str(caller.user_id)}

    await harness.user(ALICE)
    password_only = await harness.login(ALICE)
    assert (await harness.client.get("/test/privileged", headers=harness.bearer(password_only))).status_code == 403
    secret, _ = await _enrol_totp(harness, password_only)
    challenge = await harness.login(ALICE)
    harness.clock.advance(seconds=30)
    body = {"mfa_token": challenge["mfa_token"], "code": totp_at(secret, _step(harness))}
    two_factor = (await harness.client.post("/api/v1/auth/mfa", json=body)).json()
    assert (await harness.client.get("/test/privileged", headers=harness.bearer(two_factor))).status_code == 200
    assert (await harness.client.get("/test/privileged")).status_code == 401


async def test_hash_is_upgraded_at_sign_in_when_parameters_change(harness: Harness) -> None:
    """V11.4.2 / Django-style setter: a stronger cost applies at the next sign-in."""
    from bastion.identity.hashing import AsyncHasher
    from bastion.identity.models import User
    from bastion.security import Argon2Params, PasswordHasher

    await harness.user(ALICE)
    before = await harness.app.state.db.value(select(User.password_hash))
    assert before is not None
    assert "m=7168,t=1" in before
    stronger = PasswordHasher(Argon2Params(memory_cost_kib=8192, time_cost=2))
    harness.app.state.identity.hasher = AsyncHasher(stronger, 1)
    await harness.login(ALICE)
    after = await harness.app.state.db.value(select(User.password_hash))
    assert after is not None
    assert "m=8192,t=2" in after
    await harness.login(ALICE)  # the upgraded hash still verifies


async def test_password_reset_lifts_a_lockout(harness: Harness) -> None:
    await harness.user(ALICE)
    for attempt in range(10):
        await harness.client.post("/api/v1/auth/login", json={"email": ALICE, "password": f"wrong-guess-{attempt:03d}"})
    await _lift_throttles(harness)
    assert (
        await harness.client.post("/api/v1/auth/login", json={"email": ALICE, "password": PASSWORD})
    ).status_code == 401
    await harness.client.post("/api/v1/auth/password/forgot", json={"email": ALICE})
    token = await harness.token_from_last_mail(ALICE)
    reset = {"token": token, "new_password": NEW_PASSWORD}
    assert (await harness.client.post("/api/v1/auth/password/reset", json=reset)).status_code == 204
    await _lift_throttles(harness)
    await harness.login(ALICE, NEW_PASSWORD)
