"""A new password ends the API keys the old one could have made (README, "API keys")."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from bastion.audit import EventTag
from bastion.audit.models import AuditEvent
from harness import NEW_PASSWORD, PASSWORD, Harness

ALICE = "alice@example.com"
NOTES = {"notes": {"rules": {"list": "owner"}, "fields": {"title": {"type": "string", "max_length": 50}}}}
RECORDS = "/api/v1/collections/notes/records"


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    return {"collections": NOTES}


async def _key(harness: Harness, tokens: dict[str, str]) -> dict[str, str]:
    created = await harness.client.post(
        "/api/v1/me/api-keys", json={"name": "ci", "scopes": ["records:notes:list"]}, headers=harness.bearer(tokens)
    )
    assert created.status_code == 201, created.text
    as_key = {"authorization": f"Bearer {created.json()['key']}"}
    assert (await harness.client.get(RECORDS, headers=as_key)).status_code == 200
    return as_key


async def _revocations(harness: Harness) -> list[dict[str, object]]:
    revoked = select(AuditEvent.details).where(AuditEvent.tag == EventTag.API_KEY_REVOKE)
    return [row.details for row in await harness.app.state.db.all(revoked)]


async def test_password_reset_revokes_every_api_key(harness: Harness) -> None:
    """V6.4.1 / V7.4.3: whoever reset the password may not be whoever made the
    keys; after a reset no key of the account works."""
    await harness.register(ALICE)
    tokens = await harness.login(ALICE)
    keys = [await _key(harness, tokens), await _key(harness, tokens)]
    await harness.client.post("/api/v1/auth/password/forgot", json={"email": ALICE})
    reset = {"token": await harness.token_from_last_mail(ALICE), "new_password": NEW_PASSWORD}
    assert (await harness.client.post("/api/v1/auth/password/reset", json=reset)).status_code == 204
    for as_key in keys:
        assert (await harness.client.get(RECORDS, headers=as_key)).status_code == 401
    (revoked,) = await _revocations(harness)
    assert revoked["reason"] == "password_reset"
    assert len(revoked["key_ids"]) == 2  # type: ignore[arg-type]


async def test_password_change_revokes_every_api_key(harness: Harness) -> None:
    """V7.4.3: a change by the signed-in owner also ends the keys (the owner
    keeps the session it was made from, and makes new keys)."""
    await harness.register(ALICE)
    tokens = await harness.login(ALICE)
    as_key = await _key(harness, tokens)
    change = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert (
        await harness.client.post("/api/v1/me/password", json=change, headers=harness.bearer(tokens))
    ).status_code == 204
    assert (await harness.client.get(RECORDS, headers=as_key)).status_code == 401
    assert (await harness.client.get(RECORDS, headers=harness.bearer(tokens))).status_code == 200
    assert [event["reason"] for event in await _revocations(harness)] == ["password_change"]
