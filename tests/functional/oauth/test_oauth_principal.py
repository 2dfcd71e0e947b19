"""An OAuth access token on Bastion's API: what was granted *and* what the
user still holds (V8.2.1, V10.3.1), refused once its grant ends (V10.4.9),
and never an ID token in its place (V9.2.2)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import update

from bastion.access.models import Role
from bastion.db import transaction
from bastion.oauth.token import revoke_grants
from conftest import token_request
from factories.oauth import REDIRECT_URI, VERIFIER, create_client, create_code
from harness import Harness


async def tokens_for(
    harness: Harness, user: Any, scopes: tuple[str, ...], *, registered: tuple[str, ...] | None = None
) -> dict[str, Any]:
    client_id, secret = await create_client(harness.app, scopes=registered or scopes)
    code = await create_code(harness.app, client_id, user.id, scopes=scopes)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": VERIFIER}
    response = await token_request(harness, client_id, secret, form)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_the_token_holds_only_its_scopes(harness: Harness) -> None:
    user = await harness.user("alice@example.com")
    bearer = harness.bearer((await tokens_for(harness, user, ("openid", "records:notes:list")))["access_token"])
    assert (await harness.client.get(harness.records("notes"), headers=bearer)).status_code == 200
    created = await harness.client.post(harness.records("notes"), json={"title": "x"}, headers=bearer)
    assert created.status_code == 403
    assert (await harness.client.get(harness.records("things"), headers=bearer)).status_code == 403
    # No account permission without its scope: not the profile, never the password or the second factor.
    assert (await harness.client.get("/api/v1/me", headers=bearer)).status_code == 403
    password = await harness.client.post(
        "/api/v1/me/password", json={"current_password": "x", "new_password": "y"}, headers=bearer
    )
    assert password.status_code == 403
    assert (await harness.client.get("/api/v1/me/api-keys", headers=bearer)).status_code == 403


async def test_the_token_loses_what_the_user_loses_at_the_next_request(harness: Harness) -> None:
    user = await harness.user("alice@example.com")
    bearer = harness.bearer((await tokens_for(harness, user, ("records:*",)))["access_token"])
    assert (await harness.client.get(harness.records("things"), headers=bearer)).status_code == 200
    async with transaction(harness.app.state.db) as tx:
        await tx.execute(update(Role).where(Role.name == "user").values(permissions=["records:notes:list"]))
    assert (await harness.client.get(harness.records("things"), headers=bearer)).status_code == 403
    assert (await harness.client.get(harness.records("notes"), headers=bearer)).status_code == 200


async def test_an_admin_token_never_reaches_the_admin_plane(harness: Harness) -> None:
    """Only permission scopes are grantable: even a code row carrying admin:* (which registration and
    /oauth2/authorize refuse) gives nothing of it."""
    admin = await harness.user("root@example.com", roles=("admin",))
    scopes = ("records:*", "admin:users:read", "*")
    bearer = harness.bearer((await tokens_for(harness, admin, scopes, registered=("records:*",)))["access_token"])
    assert (await harness.client.get(harness.records("notes"), headers=bearer)).status_code == 200
    assert (await harness.admin_client.get("/admin/api/v1/users", headers=bearer)).status_code in (401, 403)


async def test_a_revoked_grant_refuses_its_token_at_the_next_request(harness: Harness) -> None:
    user = await harness.user("alice@example.com")
    tokens = await tokens_for(harness, user, ("openid", "records:*"))
    bearer = harness.bearer(tokens["access_token"])
    assert (await harness.client.get(harness.records("notes"), headers=bearer)).status_code == 200
    async with transaction(harness.app.state.db) as tx:
        assert await revoke_grants(tx, user_id=user.id, reason="consent_withdrawn", now=harness.clock.now()) == 1
        assert await revoke_grants(tx, user_id=user.id, reason="again", now=harness.clock.now()) == 0
    refused = await harness.client.get(harness.records("notes"), headers=bearer)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]


async def test_an_id_token_or_a_tampered_token_is_not_an_access_token(harness: Harness) -> None:
    user = await harness.user("alice@example.com")
    tokens = await tokens_for(harness, user, ("openid", "records:*"))
    id_token = harness.bearer(tokens["id_token"])
    assert (await harness.client.get(harness.records("notes"), headers=id_token)).status_code == 401
    header, payload, signature = tokens["access_token"].split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    for token in (tampered, "not.a.jwt", "a" * 5000, f"{header}.{payload}"):
        response = await harness.client.get(harness.records("notes"), headers=harness.bearer(token))
        assert response.status_code == 401, token[:20]


async def test_revoke_grants_needs_a_filter(harness: Harness) -> None:
    async with transaction(harness.app.state.db) as tx:
        with pytest.raises(ValueError, match="at least one filter"):
            await revoke_grants(tx, reason="everything", now=harness.clock.now())
        assert await revoke_grants(tx, grant_id=uuid.uuid4(), reason="none such", now=harness.clock.now()) == 0


async def test_narrowing_the_client_narrows_its_users_tokens_at_the_next_request(harness: Harness) -> None:
    from factories.oauth import set_client_scopes

    user = await harness.user("alice@example.com")
    client_id, secret = await create_client(harness.app, scopes=("records:*",))
    code = await create_code(harness.app, client_id, user.id, scopes=("records:*",))
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": VERIFIER}
    bearer = harness.bearer((await token_request(harness, client_id, secret, form)).json()["access_token"])
    assert (await harness.client.get(harness.records("things"), headers=bearer)).status_code == 200
    await set_client_scopes(harness.app, client_id, ("records:notes:list",))
    assert (await harness.client.get(harness.records("things"), headers=bearer)).status_code == 403
    assert (await harness.client.get(harness.records("notes"), headers=bearer)).status_code == 200
