"""Incident lockdown: writes and sign-ins refused (503, ``type`` ending ``/lockdown``), reads go on,
admins with a second factor still sign in, the admin plane and ``/readyz`` stay up, and every
process sees the change within ``incident.state_refresh`` (≤ 1 s)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bastion.access.guard import every_route
from bastion.app import create_app
from bastion.cli.incident import set_lockdown
from bastion.clock import FrozenClock
from bastion.incident.guard import SIGN_IN_PATHS
from bastion.incident.state import Lockdown
from factories import unit_of_work
from factories.identity import ADMIN, PASSWORD, create_admin, enable_totp
from factories.oauth import REDIRECT_URI, VERIFIER, basic, create_client, create_code
from harness import CHEAP_ARGON2, Harness

NOTE = {"title": "hello"}


async def lockdown(app: FastAPI, on: bool, reason: str | None = "drill") -> None:
    async with unit_of_work(app) as uow:
        await set_lockdown(app.state, uow, on=on, reason=reason)


def refused(response: httpx.Response) -> bool:
    return response.status_code == 503 and response.json()["type"].endswith("/lockdown")


async def test_writes_are_refused_and_reads_go_on(harness: Harness) -> None:
    """Lockdown refuses every change with its own problem type; reads and probes answer."""
    alice = await harness.signed_in("alice@example.com")
    created = await harness.create(alice, "notes", NOTE)
    await lockdown(harness.app, True)

    write = await harness.client.post(harness.records("notes"), json=NOTE, headers=harness.bearer(alice))
    assert refused(write), write.text
    assert write.headers["retry-after"]
    assert write.headers["content-type"] == "application/problem+json"
    patch = await harness.client.patch(
        f"{harness.records('notes')}/{created['id']}", json={"title": "x"}, headers=harness.bearer(alice)
    )
    assert refused(patch)
    delete = await harness.client.delete(f"{harness.records('notes')}/{created['id']}", headers=harness.bearer(alice))
    assert refused(delete)
    # Refused before any route ran: nothing changed.
    listed = await harness.client.get(harness.records("notes"), headers=harness.bearer(alice))
    assert listed.status_code == 200
    assert [item["title"] for item in listed.json()["items"]] == ["hello"]
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(alice))).status_code == 200
    assert (await harness.client.get("/readyz")).status_code == 200
    assert (await harness.client.get("/healthz")).status_code == 200
    # Registration is a write too.
    register = await harness.client.post(
        "/api/v1/auth/register", json={"email": "new@example.com", "password": PASSWORD}
    )
    assert refused(register)

    await lockdown(harness.app, False)
    after = await harness.client.post(harness.records("notes"), json=NOTE, headers=harness.bearer(alice))
    assert after.status_code == 201


async def test_sign_ins_are_refused_except_admins_with_mfa(harness: Harness) -> None:
    """V6.3.1: during lockdown only an administrator with a second factor signs in (password, MFA step)."""
    await harness.user("alice@example.com")
    admin, secret = await create_admin(harness.app)
    assert secret is not None
    harness.clock.advance(seconds=30)  # the confirming code's step is spent
    await harness.user("plain-admin@example.com", roles=("admin",))
    await lockdown(harness.app, True)

    alice = await harness.client.post("/api/v1/auth/login", json={"email": "alice@example.com", "password": PASSWORD})
    assert refused(alice), alice.text
    # An admin without a second factor is no exception.
    plain = await harness.client.post(
        "/api/v1/auth/login", json={"email": "plain-admin@example.com", "password": PASSWORD}
    )
    assert refused(plain)
    # The admin's wrong password gets the same answer as everyone's: no oracle.
    wrong = await harness.client.post("/api/v1/auth/login", json={"email": ADMIN, "password": "not-the-password"})
    assert refused(wrong), wrong.text
    challenge = await harness.client.post("/api/v1/auth/login", json={"email": ADMIN, "password": PASSWORD})
    assert challenge.status_code == 200
    assert challenge.json()["mfa_required"] is True
    step = await harness.client.post(
        "/api/v1/auth/mfa", json={"mfa_token": challenge.json()["mfa_token"], "code": harness.totp(secret)}
    )
    assert step.status_code == 200, step.text
    tokens = step.json()
    # The admin plane stays up for that admin (mTLS listener), writes included.
    alice_user = await harness.app.state.identity.by_email(harness.app.state.db, "alice@example.com")
    assert alice_user is not None
    revoked = await harness.admin_client.delete(
        f"/admin/api/v1/users/{alice_user.id}/sessions", headers=harness.bearer(tokens)
    )
    assert revoked.status_code == 204, revoked.text
    assert (await harness.admin_client.get("/admin/api/v1/users", headers=harness.bearer(tokens))).status_code == 200
    # On the public listener writes are refused for the admin too.
    write = await harness.client.post(harness.records("notes"), json=NOTE, headers=harness.bearer(tokens))
    assert refused(write)
    assert admin.id is not None


async def test_a_non_admin_with_totp_is_refused_at_the_password_step(harness: Harness) -> None:
    """V6.3.1: a second factor alone is not enough; the admin role is needed too."""
    user = await harness.user("bob@example.com")
    await enable_totp(harness.app, user)
    harness.clock.advance(seconds=30)
    await lockdown(harness.app, True)
    challenge = await harness.client.post("/api/v1/auth/login", json={"email": "bob@example.com", "password": PASSWORD})
    assert refused(challenge), challenge.text


async def test_a_non_admin_refused_at_the_mfa_step_when_a_challenge_was_issued_before(harness: Harness) -> None:
    """A challenge issued just before lockdown does not finish a sign-in after it."""
    user = await harness.user("bob@example.com")
    secret = await enable_totp(harness.app, user)
    harness.clock.advance(seconds=30)
    challenge = await harness.client.post("/api/v1/auth/login", json={"email": "bob@example.com", "password": PASSWORD})
    assert challenge.status_code == 200
    await lockdown(harness.app, True)
    step = await harness.client.post(
        "/api/v1/auth/mfa", json={"mfa_token": challenge.json()["mfa_token"], "code": harness.totp(secret)}
    )
    assert refused(step), step.text


async def test_lockdown_tells_no_right_password_from_a_wrong_one(harness: Harness) -> None:
    """V6.3.1, attack side: during lockdown the answer to a stuffed credential is the same whether the
    password is right, wrong, or the account does not exist; no password is even checked."""
    await harness.user("alice@example.com")
    await lockdown(harness.app, True)
    answers = []
    for email, password in [
        ("alice@example.com", PASSWORD),
        ("alice@example.com", "wrong-password-123"),
        ("nobody@example.com", PASSWORD),
        ("not an address", PASSWORD),
    ]:
        response = await harness.client.post("/api/v1/auth/login", json={"email": email, "password": password})
        answers.append((response.status_code, response.json()["type"], response.json()["detail"]))
    assert len(set(answers)) == 1, answers
    assert answers[0][0] == 503


async def test_a_refresh_is_a_sign_in_and_the_token_survives_the_refusal(harness: Harness) -> None:
    """V6.3.1: a refresh during lockdown is refused before the token is spent, so it works once lockdown is off."""
    alice = await harness.signed_in("alice@example.com")
    admin = await harness.admin()
    await lockdown(harness.app, True)
    refused_refresh = await harness.client.post("/api/v1/auth/refresh", json={"refresh_token": alice["refresh_token"]})
    assert refused(refused_refresh), refused_refresh.text
    admin_refresh = await harness.client.post("/api/v1/auth/refresh", json={"refresh_token": admin["refresh_token"]})
    assert admin_refresh.status_code == 200, admin_refresh.text
    # Sign-out is not a sign-in: it goes on.
    logout = await harness.client.post("/api/v1/auth/logout", headers=harness.bearer(admin_refresh.json()))
    assert logout.status_code == 204

    await lockdown(harness.app, False)
    again = await harness.client.post("/api/v1/auth/refresh", json={"refresh_token": alice["refresh_token"]})
    assert again.status_code == 200, again.text


async def token_request(harness: Harness, client_id: str, secret: str | None, form: dict[str, str]) -> httpx.Response:
    return await harness.client.post("/oauth2/token", data=form, headers=basic(client_id, secret))


def code_form(code: str) -> dict[str, str]:
    return {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": VERIFIER}


async def test_oauth_grants_for_users_are_sign_ins(harness: Harness) -> None:
    """V6.3.1: code and refresh grants for a user are refused during lockdown unless the user is an admin with MFA."""
    alice = await harness.user("alice@example.com")
    admin, _ = await create_admin(harness.app)
    client_id, secret = await create_client(harness.app)
    first_code = await create_code(harness.app, client_id, alice.id)
    before = await token_request(harness, client_id, secret, code_form(first_code))
    assert before.status_code == 200, before.text
    await lockdown(harness.app, True)

    alice_code = await create_code(harness.app, client_id, alice.id)
    code = await token_request(harness, client_id, secret, code_form(alice_code))
    assert refused(code), code.text
    refresh = {"grant_type": "refresh_token", "refresh_token": before.json()["refresh_token"]}
    assert refused(await token_request(harness, client_id, secret, refresh))
    admin_code = await create_code(harness.app, client_id, admin.id, amr=("pwd", "otp"))
    admitted = await token_request(harness, client_id, secret, code_form(admin_code))
    assert admitted.status_code == 200, admitted.text
    admin_password_only = await create_code(harness.app, client_id, admin.id, amr=("pwd",))
    assert refused(await token_request(harness, client_id, secret, code_form(admin_password_only)))
    # A client acting as itself is not a user's sign-in.
    machine = await token_request(harness, client_id, secret, {"grant_type": "client_credentials"})
    assert machine.status_code == 200, machine.text

    await lockdown(harness.app, False)
    # The refused refresh did not spend the token.
    assert (await token_request(harness, client_id, secret, refresh)).status_code == 200


@pytest.mark.parametrize("harness_settings", [{"incident": {"lockdown_allows_reads": False}}])
async def test_reads_can_be_refused_too_but_not_the_probes(harness: Harness) -> None:
    """``incident.lockdown_allows_reads = false``: reads refused as well; ``/readyz`` stays ready."""
    alice = await harness.signed_in("alice@example.com")
    await lockdown(harness.app, True)
    assert refused(await harness.client.get("/api/v1/me", headers=harness.bearer(alice)))
    assert (await harness.client.get("/readyz")).status_code == 200


async def test_every_exempt_path_is_a_route(harness: Harness) -> None:
    """The sign-in paths the guard lets through exist (a renamed route must not leave a stale exemption)."""
    paths = {route.path for route in every_route(harness.app) if "POST" in route.methods}
    assert paths >= SIGN_IN_PATHS, SIGN_IN_PATHS - paths


async def test_lockdown_on_needs_no_restart_and_off_needs_no_reason(harness: Harness) -> None:
    await lockdown(harness.app, True, "first")
    await lockdown(harness.app, True, "second reason")
    state = await harness.app.state.lockdown.current()
    assert (state.on, state.reason, state.by) == (True, "second reason", "cli")
    await lockdown(harness.app, False, None)
    assert not (await harness.app.state.lockdown.current()).on


async def test_a_second_process_sees_lockdown_within_a_second(harness: Harness) -> None:
    """Cluster-wide within 1 s: another app on the same database (its own cached reader) refuses writes in time."""
    other = create_app(harness.settings, clock=FrozenClock(harness.clock.now()))
    async with (
        other.router.lifespan_context(other),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="https://testserver") as client,
    ):
        alice = await harness.signed_in("alice@example.com")
        headers = harness.bearer(alice)
        # Warm the other process's cache with "off".
        assert (await client.post(harness.records("notes"), json=NOTE, headers=headers)).status_code == 201
        await lockdown(harness.app, True)
        started = time.monotonic()
        while not refused(await client.post(harness.records("notes"), json=NOTE, headers=headers)):
            assert time.monotonic() - started < 5, "the other process never saw the lockdown"
            await asyncio.sleep(0.02)
        seen = time.monotonic() - started
        print(f"the other process refused writes {seen * 1000:.0f} ms after the commit")
        assert seen < 1.0, seen
        await lockdown(harness.app, False)
        started = time.monotonic()
        while (await client.post(harness.records("notes"), json=NOTE, headers=headers)).status_code != 201:
            assert time.monotonic() - started < 5
            await asyncio.sleep(0.02)
        assert time.monotonic() - started < 1.0


async def test_the_reader_shares_one_refresh_and_keeps_the_last_state_when_the_database_fails() -> None:
    """Many concurrent callers cause one read per refresh; a failed read keeps the last known state."""
    from bastion.db import DatabaseUnavailable

    reads: list[int] = []
    state: dict[str, Any] = {"fail": False}

    class Row:
        on, reason, since, by = True, "r", None, "cli"

    class FakeDb:
        async def one(self, statement: Any, params: Any = None) -> Any:
            reads.append(1)
            await asyncio.sleep(0.01)
            if state["fail"]:
                raise DatabaseUnavailable("down")
            return Row()

    now = [0.0]
    reader = Lockdown(FakeDb(), refresh=0.5, monotonic=lambda: now[0])  # type: ignore[arg-type]
    results = await asyncio.gather(*(reader.is_on() for _ in range(50)))
    assert all(results)
    assert len(reads) == 1
    now[0] = 0.4
    assert await reader.is_on()
    assert len(reads) == 1
    now[0] = 0.6
    state["fail"] = True
    assert await reader.is_on()  # still on: the last value read
    assert len(reads) == 2


async def test_lockdown_state_is_shared_by_settings_files(make_settings: Any, clock: FrozenClock) -> None:
    """The lockdown row lives in the database, not the process: a restarted app starts in lockdown."""
    from harness import open_harness

    settings = make_settings(passwords=CHEAP_ARGON2)
    async with open_harness(settings, clock) as first:
        alice = await first.signed_in("alice@example.com")
        await lockdown(first.app, True)
    async with open_harness(settings, clock) as second:
        assert refused(await second.client.post(second.records("notes"), json=NOTE, headers=second.bearer(alice)))


async def test_the_hosted_sign_in_page_tells_no_right_password_from_a_wrong_one(harness: Harness) -> None:
    """V6.3.1, attack side: the hosted sign-in form during lockdown answers alike for any password."""
    from factories.hosted import Browser, add_client, authorize_query, forms_of, pkce

    await harness.user("alice@example.com")
    client_id = await add_client(harness.app)
    page = await Browser(harness.client).start(authorize_query(client_id, pkce()[1]))
    fields = dict(forms_of(page.text)["sign-in"].fields)
    await lockdown(harness.app, True)
    answers = []
    for password in (PASSWORD, "wrong-password-123"):
        response = await harness.client.post(
            "/oauth2/sign-in", data={**fields, "email": "alice@example.com", "password": password}
        )
        answers.append((response.status_code, response.headers["content-type"], response.text.split('"request_id"')[0]))
    assert answers[0] == answers[1], answers
    assert answers[0][0] == 503
