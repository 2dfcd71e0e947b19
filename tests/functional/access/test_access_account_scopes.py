"""Scoped API keys and the caller's own account (``/api/v1/me*``), from the attacker's side.

ASVS 5.0 V8.2.1 (function-level access only with explicit permissions): a
key made for records, once leaked, must not read the profile or sessions,
revoke sessions, change the password or enrol TOTP (which would lock the
owner out). Account routes take an API key only when a scope names the
permission exactly.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bastion.audit.models import AuditEvent
from harness import NEW_PASSWORD, PASSWORD, Harness

ALICE = "alice@example.com"


async def _key(harness: Harness, session: dict[str, str], *scopes: str) -> dict[str, str]:
    created = await harness.client.post(
        "/api/v1/me/api-keys", json={"name": "k", "scopes": list(scopes)}, headers=harness.bearer(session)
    )
    assert created.status_code == 201, created.text
    return {"authorization": f"Bearer {created.json()['key']}"}


async def test_v8_2_1_a_records_key_cannot_touch_the_account(harness: Harness) -> None:
    """V8.2.1: every account route refuses a key scoped records:notes:read
    (403 and an access:denied event), and nothing about the account changed."""
    await harness.register(ALICE)
    alice = await harness.login(ALICE)
    key = await _key(harness, alice, "records:notes:read")
    sessions = (await harness.client.get("/api/v1/me/sessions", headers=harness.bearer(alice))).json()
    attempts = {
        "read profile": harness.client.get("/api/v1/me", headers=key),
        "list sessions": harness.client.get("/api/v1/me/sessions", headers=key),
        "revoke session": harness.client.delete(f"/api/v1/me/sessions/{sessions[0]['id']}", headers=key),
        "change password": harness.client.post(
            "/api/v1/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=key
        ),
        "enrol totp": harness.client.post("/api/v1/me/mfa/totp", headers=key),
        "confirm totp": harness.client.post("/api/v1/me/mfa/totp/confirm", json={"code": "123456"}, headers=key),
        "remove totp": harness.client.request("DELETE", "/api/v1/me/mfa/totp", json={"code": "123456"}, headers=key),
        "manage keys": harness.client.get("/api/v1/me/api-keys", headers=key),
    }
    statuses = {name: (await attempt).status_code for name, attempt in attempts.items()}
    assert statuses == dict.fromkeys(attempts, 403)

    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(alice))).status_code == 200
    assert (await harness.login(ALICE, PASSWORD))["access_token"]  # password unchanged, session alive
    tags = [row.tag for row in await harness.app.state.db.all(select(AuditEvent.tag))]
    assert tags.count("access:denied") == len(attempts)
    assert "auth:password:change" not in tags
    assert "auth:totp:enrol" not in tags


@pytest.mark.parametrize("wildcard", ["records:*", "me:api-keys"])
async def test_v8_2_1_a_key_holds_an_account_permission_only_when_a_scope_names_it(
    harness: Harness, wildcard: str
) -> None:
    """V8.2.1: me:read reads the profile and nothing more; a key cannot mint
    a key with account scopes it was not given."""
    await harness.register(ALICE)
    alice = await harness.login(ALICE)
    reader = await _key(harness, alice, "me:read", wildcard)
    assert (await harness.client.get("/api/v1/me", headers=reader)).status_code == 200
    assert (await harness.client.get("/api/v1/me/sessions", headers=reader)).status_code == 200
    assert (await harness.client.post("/api/v1/me/mfa/totp", headers=reader)).status_code == 403
    minted = await harness.client.post(
        "/api/v1/me/api-keys", json={"name": "escalate", "scopes": ["me:password"]}, headers=reader
    )
    assert minted.status_code in (403, 422)
