"""The client-credentials grant (RFC 6749 §4.4): the client acting as itself,
with only the scopes registered for it, and nothing of any user's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from bastion.audit.models import AuditEvent
from bastion.oauth.models import OAuthGrant
from conftest import token_request
from factories.oauth import create_client, set_client_scopes
from harness import Harness

GRANT = {"grant_type": "client_credentials"}


async def test_issues_an_access_token_of_the_registered_scopes_only(harness: Harness) -> None:
    """V10.4.11: a client gets no more than it is registered for."""
    client_id, secret = await create_client(harness.app, scopes=("openid", "records:notes:read"))
    response = await token_request(harness, client_id, secret, GRANT)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "records:notes:read"  # openid means nothing without a user
    assert "refresh_token" not in body
    assert "id_token" not in body
    claims = harness.app.state.oauth.signer.verify(body["access_token"], now=int(harness.clock.now().timestamp()))
    assert claims["sub"] == client_id
    assert claims["client_id"] == client_id
    assert "gid" in claims

    wider = await token_request(harness, client_id, secret, {**GRANT, "scope": "records:*"})
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"


async def test_a_wrong_secret_or_an_unknown_client_is_invalid_client_and_issues_nothing(harness: Harness) -> None:
    client_id, secret = await create_client(harness.app)
    for who, password in ((client_id, "wrong"), ("nobody", secret)):
        response = await token_request(harness, who, password, GRANT)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
        assert response.headers["www-authenticate"].startswith("Basic")
    count = await harness.app.state.db.value(select(func.count()).select_from(OAuthGrant))
    assert count == 0


async def test_the_grant_type_must_be_registered_and_implicit_or_password_are_unsupported(harness: Harness) -> None:
    client_id, secret = await create_client(harness.app, grant_types=("authorization_code",))
    refused = await token_request(harness, client_id, secret, GRANT)
    assert refused.status_code == 400
    assert refused.json()["error"] == "unauthorized_client"
    for grant_type in ("password", "implicit", "token", "urn:example:unknown"):
        response = await token_request(harness, client_id, secret, {"grant_type": grant_type})
        assert (response.status_code, response.json()["error"]) == (400, "unsupported_grant_type"), grant_type


async def test_a_client_token_calls_the_api_with_the_client_scopes_and_owns_no_account(harness: Harness) -> None:
    """V8.2.1: the client acts as itself; its scopes end when an admin narrows them."""
    client_id, secret = await create_client(harness.app, scopes=("records:notes:create", "records:notes:list"))
    token = (await token_request(harness, client_id, secret, GRANT)).json()["access_token"]
    bearer = harness.bearer(token)
    created = await harness.client.post(harness.records("notes"), json={"title": "from a client"}, headers=bearer)
    assert created.status_code == 201, created.text
    assert (await harness.client.get("/api/v1/me", headers=bearer)).status_code in (401, 403)
    read = await harness.client.get(harness.records("things"), headers=bearer)
    assert read.status_code == 403

    await set_client_scopes(harness.app, client_id, ("records:notes:list",))
    again = await harness.client.post(harness.records("notes"), json={"title": "again"}, headers=bearer)
    assert again.status_code == 403


async def test_grants_share_one_standing_grant_and_each_is_audited(harness: Harness) -> None:
    client_id, secret = await create_client(harness.app)
    responses = [await token_request(harness, client_id, secret, GRANT) for _ in range(3)]
    responses += await asyncio.gather(*(token_request(harness, client_id, secret, GRANT) for _ in range(2)))
    assert all(response.status_code == 200 for response in responses)
    db = harness.app.state.db
    assert await db.value(select(func.count()).select_from(OAuthGrant)) == 1
    events = await db.value(select(func.count()).select_from(AuditEvent).where(AuditEvent.tag == "oauth:token"))
    assert events == 5


class TestThrottle:
    @pytest.fixture
    def harness_settings(self) -> dict[str, Any]:
        # A day: a sliding window that turns over between the third and fourth request would let it through.
        return {"oauth": {"token_rate_per_ip": "3/day"}}

    async def test_the_token_endpoint_is_throttled_per_address_before_any_work(self, harness: Harness) -> None:
        """V2.4.1: a client guessing secrets or codes runs out of attempts."""
        client_id, secret = await create_client(harness.app)
        statuses = [(await token_request(harness, client_id, "wrong", GRANT)).status_code for _ in range(3)]
        assert statuses == [401, 401, 401]
        throttled = await token_request(harness, client_id, secret, GRANT)
        assert throttled.status_code == 429
        assert "retry-after" in throttled.headers
