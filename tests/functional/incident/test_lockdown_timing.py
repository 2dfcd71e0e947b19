"""During lockdown a refused password sign-in costs what an admin's costs: one password hash
computation, so response times do not tell which addresses are admins with TOTP."""

from __future__ import annotations

from collections import Counter

import pytest
from fastapi import FastAPI

from bastion.cli.incident import set_lockdown
from factories import unit_of_work
from factories.identity import ADMIN, PASSWORD, create_admin, enable_totp
from harness import Harness


async def lockdown(app: FastAPI) -> None:
    async with unit_of_work(app) as uow:
        await set_lockdown(app.state, uow, on=True, reason="drill")


@pytest.fixture
def hashes(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times the sign-in hasher verified a password, real or dummy (and with what)."""
    hasher = harness.app.state.identity.hasher
    counted: Counter[str] = Counter()
    verify, dummy = hasher.verify_and_update, hasher.dummy_verify

    async def counting_verify(encoded: str, password: str) -> tuple[bool, str | None]:
        counted["verify"] += 1
        return await verify(encoded, password)

    async def counting_dummy(password: str) -> None:
        counted["dummy"] += 1
        counted[f"dummy:{password}"] += 1
        return await dummy(password)

    monkeypatch.setattr(hasher, "verify_and_update", counting_verify)
    monkeypatch.setattr(hasher, "dummy_verify", counting_dummy)
    return counted


async def test_a_refused_sign_in_runs_the_dummy_verify(harness: Harness, hashes: Counter[str]) -> None:
    """V6.3.8 (no timing oracle on sign-in): each refused attempt costs one password check,
    as an admin's attempt does; the refusal itself is unchanged (503 lockdown)."""
    await harness.user("alice@example.com")
    bob = await harness.user("bob@example.com")
    await enable_totp(harness.app, bob)  # TOTP without the admin role: refused
    await harness.user("plain-admin@example.com", roles=("admin",))  # admin without TOTP: refused
    _, secret = await create_admin(harness.app)
    assert secret is not None
    harness.clock.advance(seconds=30)
    await lockdown(harness.app)

    refused = [
        {"email": "alice@example.com", "password": PASSWORD},
        {"email": "alice@example.com", "password": "wrong-password-123"},
        {"email": "bob@example.com", "password": PASSWORD},
        {"email": "plain-admin@example.com", "password": PASSWORD},
        {"email": "nobody@example.com", "password": PASSWORD},
        {"email": "not an address", "password": "x-password-1"},
        {"email": ["alice@example.com"], "password": 7},
    ]
    for body in refused:
        hashes.clear()
        response = await harness.client.post("/api/v1/auth/login", json=body)
        assert response.status_code == 503, response.text
        assert response.json()["type"].endswith("/lockdown")
        assert hashes["dummy"] + hashes["verify"] == 1, (body, hashes)
        assert hashes["dummy"] == 1, (body, hashes)
    assert hashes["dummy:"] == 1  # a password that is not a string is verified as ""

    # The admin with TOTP: the one real verify, and no dummy one on top.
    hashes.clear()
    challenge = await harness.client.post("/api/v1/auth/login", json={"email": ADMIN, "password": PASSWORD})
    assert challenge.status_code == 200, challenge.text
    assert hashes["verify"] == 1
    assert hashes["dummy"] == 0


async def test_the_hosted_sign_in_form_runs_the_dummy_verify_too(harness: Harness, hashes: Counter[str]) -> None:
    """V6.3.8: the hosted sign-in page's form, refused during lockdown, costs one password check too."""
    from factories.hosted import Browser, add_client, authorize_query, forms_of, pkce

    await harness.user("alice@example.com")
    client_id = await add_client(harness.app)
    page = await Browser(harness.client).start(authorize_query(client_id, pkce()[1]))
    fields = dict(forms_of(page.text)["sign-in"].fields)
    await lockdown(harness.app)
    hashes.clear()
    response = await harness.client.post(
        "/oauth2/sign-in", data={**fields, "email": "alice@example.com", "password": "form-password-1"}
    )
    assert response.status_code == 503
    assert hashes["dummy:form-password-1"] == 1
    assert hashes["verify"] == 0
