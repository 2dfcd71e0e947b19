"""Refresh tokens (RFC 6749 §6) that rotate, where reuse revokes the whole
grant (RFC 9700 §4.14.2), and whose scope may narrow but never widen."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select

from bastion.audit.models import AuditEvent
from bastion.oauth.models import OAuthGrant
from conftest import token_request
from factories import unit_of_work
from factories.oauth import REDIRECT_URI, VERIFIER, create_client, create_code
from harness import Harness


async def signed_in_client(harness: Harness, **client: Any) -> tuple[str, str | None, dict[str, Any], Any]:
    """A client holding a code-grant token response for Alice."""
    user = await harness.user("alice@example.com")
    client_id, secret = await create_client(harness.app, **client)
    code = await create_code(harness.app, client_id, user.id, scopes=("openid", "records:*", "me:read"))
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": VERIFIER}
    response = await token_request(harness, client_id, secret, form)
    assert response.status_code == 200, response.text
    return client_id, secret, response.json(), user


def refresh(token: str, **extra: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": token, **extra}


async def test_each_refresh_rotates_and_the_old_token_is_spent(harness: Harness) -> None:
    """V10.4.8: a refresh token is single-use."""
    client_id, secret, first, _ = await signed_in_client(harness)
    second = await token_request(harness, client_id, secret, refresh(first["refresh_token"]))
    assert second.status_code == 200, second.text
    body = second.json()
    assert body["refresh_token"] != first["refresh_token"]
    assert body["scope"] == "openid records:* me:read"
    assert "id_token" in body
    third = await token_request(harness, client_id, secret, refresh(body["refresh_token"]))
    assert third.status_code == 200


async def test_a_reused_refresh_token_revokes_the_grant_and_every_token_of_it(harness: Harness) -> None:
    """V10.4.9: the reuse of a spent token ends the family, the newest tokens included."""
    client_id, secret, first, _ = await signed_in_client(harness)
    newer = (await token_request(harness, client_id, secret, refresh(first["refresh_token"]))).json()
    bearer = harness.bearer(newer["access_token"])
    assert (await harness.client.get("/api/v1/me", headers=bearer)).status_code == 200

    reused = await token_request(harness, client_id, secret, refresh(first["refresh_token"]))
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
    assert (await harness.client.get("/api/v1/me", headers=bearer)).status_code == 401
    after = await token_request(harness, client_id, secret, refresh(newer["refresh_token"]))
    assert (after.status_code, after.json()["error"]) == (400, "invalid_grant")
    [grant] = await harness.app.state.db.all(select(OAuthGrant))
    assert grant.revoke_reason == "refresh_reuse"
    events = await harness.app.state.db.value(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.tag == "oauth:refresh_reuse_detected")
    )
    assert events == 1


async def test_ten_concurrent_refreshes_of_one_token_one_wins_and_the_family_dies(harness: Harness) -> None:
    client_id, secret, first, _ = await signed_in_client(harness)
    responses = await asyncio.gather(
        *(token_request(harness, client_id, secret, refresh(first["refresh_token"])) for _ in range(10))
    )
    won = [response for response in responses if response.status_code == 200]
    assert len(won) == 1
    [grant] = await harness.app.state.db.all(select(OAuthGrant))
    assert grant.revoked_at is not None
    again = await token_request(harness, client_id, secret, refresh(won[0].json()["refresh_token"]))
    assert again.status_code == 400


async def test_the_scope_may_narrow_but_never_widen(harness: Harness) -> None:
    client_id, secret, first, _ = await signed_in_client(harness)
    narrowed = await token_request(harness, client_id, secret, refresh(first["refresh_token"], scope="records:*"))
    assert narrowed.status_code == 200, narrowed.text
    body = narrowed.json()
    assert body["scope"] == "records:*"
    assert "id_token" not in body  # no openid in this token's scope
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(body["access_token"]))).status_code == 403
    # The grant keeps its scope: the next refresh may ask for all of it again (RFC 6749 §6).
    full = await token_request(harness, client_id, secret, refresh(body["refresh_token"]))
    assert full.json()["scope"] == "openid records:* me:read"
    wider = await token_request(
        harness, client_id, secret, refresh(full.json()["refresh_token"], scope="records:* admin:users:read")
    )
    assert (wider.status_code, wider.json()["error"]) == (400, "invalid_scope")


async def test_another_client_cannot_use_the_refresh_token(harness: Harness) -> None:
    client_id, secret, first, _ = await signed_in_client(harness)
    other_id, other_secret = await create_client(harness.app)
    stolen = await token_request(harness, other_id, other_secret, refresh(first["refresh_token"]))
    assert (stolen.status_code, stolen.json()["error"]) == (400, "invalid_grant")
    own = await token_request(harness, client_id, secret, refresh(first["refresh_token"]))
    assert own.status_code == 200


async def test_a_disabled_user_can_no_longer_refresh(harness: Harness) -> None:
    client_id, secret, first, user = await signed_in_client(harness)
    async with unit_of_work(harness.app) as uow:
        await harness.app.state.identity.lock(uow, user, actor_id=None)
    refused = await token_request(harness, client_id, secret, refresh(first["refresh_token"]))
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    bearer = harness.bearer(first["access_token"])
    assert (await harness.client.get(harness.records("notes"), headers=bearer)).status_code == 401


async def test_an_unknown_refresh_token_is_invalid_grant(harness: Harness) -> None:
    client_id, secret = await create_client(harness.app)
    refused = await token_request(harness, client_id, secret, refresh("not-a-token"))
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
