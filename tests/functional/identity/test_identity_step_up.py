"""Step-up sign-in and password-reset-required, as a detection rule sets them
(``Responder.act``): the right password is no longer enough, and the owner
still gets in (a mailed single-use code, or TOTP; a reset link) instead of
being locked out."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from bastion.audit.models import AuditEvent
from bastion.identity.models import OneTimeToken, User
from bastion.monitor.signals import Fired, Signal
from factories.identity import enable_totp
from harness import NEW_PASSWORD, PASSWORD, Harness

ALICE = "alice@example.com"
LOGIN = "/api/v1/auth/login"
MFA = "/api/v1/auth/mfa"


def fired(account: uuid.UUID, *actions: str) -> Fired:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    signal = Signal(at=now, tag="auth:login", outcome="failure", account_id=account, address="203.0.113.5")
    return Fired(
        rule="brute-force-account", severity="medium", group_key=f"account:{account}", count=10,
        window_seconds=600.0, first_seen=now, last_seen=now, actions=actions, signal=signal,
    )  # fmt: skip


async def events(harness: Harness, tag: str) -> list[Any]:
    return await harness.app.state.db.all(select(AuditEvent).where(AuditEvent.tag == tag).order_by(AuditEvent.id))


async def row(harness: Harness, user_id: uuid.UUID) -> Any:
    return await harness.app.state.db.one(select(User).where(User.id == user_id))


async def challenge(harness: Harness) -> dict[str, Any]:
    response = await harness.client.post(LOGIN, json={"email": ALICE, "password": PASSWORD})
    assert response.status_code == 200, response.text
    body = dict(response.json())
    assert body["mfa_required"] is True
    return body


async def last_code(harness: Harness) -> str:
    for message in reversed(await harness.mails(ALICE)):
        if match := re.search(r"^\s+(\d{6})$", message.get_content(), re.MULTILINE):
            return match[1]
    raise AssertionError("no sign-in code was mailed")


async def test_step_up_asks_a_mailed_code_and_a_stepped_up_sign_in_ends_it(harness: Harness) -> None:
    """V6.3.1, V6.5.1, V6.5.4, V6.5.5: a rule's step-up turns a password sign-in
    into a two-step one with a six-digit code mailed to the address (out of
    band, single use, at most 10 minutes); once used, the step-up is over."""
    user = await harness.user(ALICE)
    assert await harness.app.state.responder.act(fired(user.id, "alert", "require_step_up")) == ["require_step_up"]
    flagged = await row(harness, user.id)
    assert flagged.step_up_until == harness.clock.now() + dt.timedelta(hours=24)
    assert len(await events(harness, "auth:step_up:required")) == 1

    body = await challenge(harness)
    assert body["methods"] == ["email"]
    assert "access_token" not in body
    code = await last_code(harness)
    mail = (await harness.mails(ALICE))[-1]
    assert code not in mail["Subject"]

    codes = await harness.app.state.db.all(select(OneTimeToken).where(OneTimeToken.purpose == "mfa_email"))
    assert [c.expires_at - c.created_at for c in codes] == [dt.timedelta(minutes=5)]
    assert code not in str([c.token_hash for c in codes])
    signed_in = await harness.client.post(MFA, json={"mfa_token": body["mfa_token"], "code": code})
    assert signed_in.status_code == 200, signed_in.text
    tokens = signed_in.json()
    assert (await row(harness, user.id)).step_up_until is None
    # The mailed code is not a second factor for the admin plane: the session is not an MFA one.
    sessions = await harness.client.get("/api/v1/me/sessions", headers=harness.bearer(tokens))
    assert [s["mfa"] for s in sessions.json()] == [False]
    mfa_events = await events(harness, "auth:mfa")
    assert mfa_events[-1].details == {"method": "email"}

    # Used once: the same code and step again, refused; the next sign-in is a plain one.
    again = await harness.client.post(MFA, json={"mfa_token": body["mfa_token"], "code": code})
    assert again.status_code == 401
    assert "access_token" in (await harness.client.post(LOGIN, json={"email": ALICE, "password": PASSWORD})).json()


async def test_the_mailed_code_never_reaches_the_log(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """V16.2.5: the one-time code is in the mail body only, never in a log line."""
    user = await harness.user(ALICE)
    await harness.app.state.responder.act(fired(user.id, "require_step_up"))
    body = await challenge(harness)
    code = await last_code(harness)
    assert (await harness.client.post(MFA, json={"mfa_token": body["mfa_token"], "code": code})).status_code == 200
    assert code not in caplog.text
    assert body["mfa_token"] not in caplog.text


async def test_the_mailed_code_is_single_use_under_racing_requests(harness: Harness) -> None:
    """V6.5.1: an out-of-band code is usable once, however many requests race with it."""
    user = await harness.user(ALICE)
    await harness.app.state.responder.act(fired(user.id, "require_step_up"))
    body = await challenge(harness)
    code = await last_code(harness)
    answers = await asyncio.gather(
        *(harness.client.post(MFA, json={"mfa_token": body["mfa_token"], "code": code}) for _ in range(8))
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] + [401] * 7
    assert len([e for e in await events(harness, "auth:login") if e.outcome == "success"]) == 1


async def test_wrong_codes_are_counted_and_burn_the_step(harness: Harness) -> None:
    """V6.6.2, V6.6.3: wrong codes count against the step (five burn it) and
    against the account's lockout, like wrong TOTP codes; a code is bound to
    its own step token and opens no other."""
    user = await harness.user(ALICE)
    await harness.app.state.responder.act(fired(user.id, "require_step_up"))
    first = await challenge(harness)
    first_code = await last_code(harness)
    second = await challenge(harness)
    second_code = await last_code(harness)
    assert first_code != second_code or first["mfa_token"] != second["mfa_token"]
    # The first step's code does not open the second step.
    if first_code != second_code:
        crossed = await harness.client.post(MFA, json={"mfa_token": second["mfa_token"], "code": first_code})
        assert crossed.status_code == 401
    wrong = [f"{n:06d}" for n in range(5) if f"{n:06d}" != second_code][:4]
    for guess in wrong:
        answer = await harness.client.post(MFA, json={"mfa_token": second["mfa_token"], "code": guess})
        assert answer.status_code == 401
    crossed_count = 1 if first_code != second_code else 0
    assert (await row(harness, user.id)).failed_mfa == len(wrong) + crossed_count
    # Five wrong answers burn the step: now even its right code is refused.
    burnt = await harness.client.post(MFA, json={"mfa_token": second["mfa_token"], "code": second_code})
    assert burnt.status_code == 401
    assert (await row(harness, user.id)).step_up_until is not None
    failures = [e for e in await events(harness, "auth:mfa") if e.outcome == "failure"]
    assert len(failures) == len(wrong) + crossed_count
    # No code ever reaches an audit event.
    for event in await harness.app.state.db.all(select(AuditEvent)):
        assert second_code not in str(event.details)
        assert first_code not in str(event.details)


async def test_a_totp_account_steps_up_with_totp_and_gets_no_mail(harness: Harness) -> None:
    user = await harness.user(ALICE)
    secret = await enable_totp(harness.app, user)
    harness.clock.advance(seconds=30)
    await harness.app.state.responder.act(fired(user.id, "require_step_up"))
    before = len(await harness.mails(ALICE))
    body = await challenge(harness)
    assert body["methods"] == ["totp", "recovery_code"]
    assert len(await harness.mails(ALICE)) == before
    answer = await harness.client.post(MFA, json={"mfa_token": body["mfa_token"], "code": harness.totp(secret)})
    assert answer.status_code == 200
    assert (await row(harness, user.id)).step_up_until is None


async def test_a_step_up_ends_by_itself(harness: Harness) -> None:
    user = await harness.user(ALICE)
    await harness.app.state.responder.act(fired(user.id, "require_step_up"))
    harness.clock.advance(hours=24, seconds=1)
    answer = await harness.client.post(LOGIN, json={"email": ALICE, "password": PASSWORD})
    assert "access_token" in answer.json()


async def test_a_wrong_password_under_step_up_mails_nothing(harness: Harness) -> None:
    """Only the right password triggers a code mail: a stranger cannot bomb the mailbox."""
    user = await harness.user(ALICE)
    await harness.app.state.responder.act(fired(user.id, "require_step_up"))
    before = len(await harness.mails(ALICE))
    answer = await harness.client.post(LOGIN, json={"email": ALICE, "password": "wrong-password-here"})
    assert answer.status_code == 401
    assert len(await harness.mails(ALICE)) == before


async def test_password_reset_required_refuses_the_right_password_and_a_reset_clears_it(harness: Harness) -> None:
    """A rule's password reset: the right password answers 403 with its own problem
    type and mails a reset link; a wrong one stays the generic 401 (the flag is
    shown only to whoever knows the password); the reset clears the flag."""
    user = await harness.user(ALICE)
    assert await harness.app.state.responder.act(fired(user.id, "require_password_reset")) == ["require_password_reset"]
    assert len(await events(harness, "auth:password:reset_required")) == 1
    wrong = await harness.client.post(LOGIN, json={"email": ALICE, "password": "wrong-password-here"})
    assert wrong.status_code == 401
    refused = await harness.client.post(LOGIN, json={"email": ALICE, "password": PASSWORD})
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/password-reset-required")
    assert "access_token" not in refused.text
    token = await harness.token_from_last_mail(ALICE)
    reset = await harness.client.post(
        "/api/v1/auth/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert reset.status_code == 204
    assert (await row(harness, user.id)).password_reset_required is False
    assert (await harness.client.post(LOGIN, json={"email": ALICE, "password": PASSWORD})).status_code == 401
    assert "access_token" in (await harness.client.post(LOGIN, json={"email": ALICE, "password": NEW_PASSWORD})).json()


async def test_account_actions_revoke_lock_and_mail(harness: Harness) -> None:
    """revoke_sessions ends every session at its next request; lock_account
    disables the account; mail_user tells the owner; an unknown account is
    nothing to act on (and act never raises)."""
    user = await harness.user(ALICE)
    tokens = await harness.sign_in(user)
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(tokens))).status_code == 200
    responder = harness.app.state.responder
    assert await responder.act(fired(user.id, "revoke_sessions", "mail_user")) == ["revoke_sessions", "mail_user"]
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(tokens))).status_code == 401
    assert any("Unusual activity" in m["Subject"] for m in await harness.mails(ALICE))
    assert await responder.act(fired(uuid.uuid4(), "lock_account", "require_step_up")) == []
    assert await responder.act(fired(user.id, "lock_account")) == ["lock_account"]
    assert (await row(harness, user.id)).disabled is True
    assert (await harness.client.post(LOGIN, json={"email": ALICE, "password": PASSWORD})).status_code == 401


@pytest.mark.parametrize("action", ["require_step_up", "require_password_reset", "mail_user", "revoke_sessions"])
async def test_the_non_locking_actions_leave_the_owner_a_way_in(harness: Harness, action: str) -> None:
    """Defaults must not hand an attacker a denial of service: every action but
    lock_account leaves the owner able to sign in (with a mailed code, or via
    the reset link) however often the rule fires."""
    user = await harness.user(ALICE)
    for _ in range(3):
        await harness.app.state.responder.act(fired(user.id, action))
    assert (await row(harness, user.id)).disabled is False
    answer = await harness.client.post(LOGIN, json={"email": ALICE, "password": PASSWORD})
    if action == "require_password_reset":
        assert answer.status_code == 403
        token = await harness.token_from_last_mail(ALICE)
        body = {"token": token, "new_password": NEW_PASSWORD}
        assert (await harness.client.post("/api/v1/auth/password/reset", json=body)).status_code == 204
        answer = await harness.client.post(LOGIN, json={"email": ALICE, "password": NEW_PASSWORD})
    assert answer.status_code == 200
    body = answer.json()
    if body.get("mfa_required"):
        code = await last_code(harness)
        answer = await harness.client.post(MFA, json={"mfa_token": body["mfa_token"], "code": code})
        assert answer.status_code == 200
    assert "access_token" in answer.json()


@pytest.mark.parametrize("harness_settings", [{"auth": {"mfa_token_ttl": 900}}])
async def test_the_mailed_code_lives_at_most_ten_minutes(harness: Harness) -> None:
    """V6.5.5: an out-of-band code has a lifetime of at most 10 minutes, even
    when the MFA step itself may last 15."""
    user = await harness.user(ALICE)
    await harness.app.state.responder.act(fired(user.id, "require_step_up"))
    body = await challenge(harness)
    code = await last_code(harness)
    harness.clock.advance(minutes=10, seconds=1)
    late = await harness.client.post(MFA, json={"mfa_token": body["mfa_token"], "code": code})
    assert late.status_code == 401
