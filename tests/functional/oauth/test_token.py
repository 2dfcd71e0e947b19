"""The authorization-code grant at the token endpoint (RFC 6749 §4.1.3, RFC 7636 §4.6).

A code is single-use, bound to its client, its redirect URI and its PKCE
challenge; a reused code revokes the tokens issued from it (§4.1.2).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from bastion.audit.models import AuditEvent
from bastion.oauth.models import OAuthGrant
from conftest import TOKEN, token_request
from factories.oauth import REDIRECT_URI, VERIFIER, create_client, create_code
from harness import Harness


def exchange(code: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": VERIFIER,
        **(overrides or {}),
    }


async def grants(harness: Harness) -> list[Any]:
    return list(await harness.app.state.db.all(select(OAuthGrant)))


async def test_a_code_is_exchanged_once_for_access_refresh_and_id_tokens(harness: Harness) -> None:
    user = await harness.user("alice@example.com")
    client_id, secret = await create_client(harness.app)
    code = await create_code(harness.app, client_id, user.id)
    response = await token_request(harness, client_id, secret, exchange(code))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == harness.settings.oauth.access_token_ttl
    assert set(body) == {"access_token", "token_type", "expires_in", "scope", "refresh_token", "id_token"}
    now = int(harness.clock.now().timestamp())
    access = harness.app.state.oauth.signer.verify(body["access_token"], now=now)
    assert access["sub"] == str(user.id)
    assert access["client_id"] == client_id
    assert access["scope"] == "openid email records:*"
    assert access["amr"] == ["pwd"]
    me = await harness.client.get(harness.records("notes"), headers=harness.bearer(body["access_token"]))
    assert me.status_code == 200


async def test_a_public_client_exchanges_with_pkce_alone(harness: Harness) -> None:
    user = await harness.user("alice@example.com")
    client_id, _ = await create_client(harness.app, public=True)
    code = await create_code(harness.app, client_id, user.id)
    response = await token_request(harness, client_id, None, exchange(code))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "overrides",
    [
        {"code_verifier": "x" * 43},  # the wrong verifier (V10.4.6)
        {"code_verifier": VERIFIER[:42]},  # too short for RFC 7636 §4.1
        {"code_verifier": VERIFIER + "!"},  # outside its alphabet
        {"redirect_uri": REDIRECT_URI + "/other"},  # not the exact redirect URI (§4.1.3)
        {"code": "forged-code"},
    ],
)
async def test_a_wrong_verifier_redirect_uri_or_code_is_invalid_grant(
    harness: Harness, overrides: dict[str, str]
) -> None:
    user = await harness.user("alice@example.com")
    client_id, secret = await create_client(harness.app)
    code = await create_code(harness.app, client_id, user.id)
    response = await token_request(harness, client_id, secret, exchange(code, overrides))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert await grants(harness) == []
    # The code was burnt by the failed attempt (or never existed): it cannot be used now either.
    again = await token_request(harness, client_id, secret, exchange(code))
    assert again.status_code == 400 if "code" not in overrides else again.status_code == 200


async def test_missing_pkce_is_refused(harness: Harness) -> None:
    """V10.4.6: no verifier, no token."""
    user = await harness.user("alice@example.com")
    client_id, secret = await create_client(harness.app)
    code = await create_code(harness.app, client_id, user.id)
    form = exchange(code)
    del form["code_verifier"]
    response = await token_request(harness, client_id, secret, form)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_a_code_of_another_client_or_an_expired_one_is_refused(harness: Harness) -> None:
    user = await harness.user("alice@example.com")
    client_id, secret = await create_client(harness.app)
    other_id, other_secret = await create_client(harness.app)
    code = await create_code(harness.app, client_id, user.id)
    stolen = await token_request(harness, other_id, other_secret, exchange(code))
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"
    harness.clock.advance(seconds=61)
    expired = await token_request(harness, client_id, secret, exchange(code))
    assert expired.status_code == 400
    assert expired.json()["error"] == "invalid_grant"
    assert await grants(harness) == []


async def test_a_reused_code_revokes_the_grant_issued_from_it(harness: Harness) -> None:
    """RFC 6749 §4.1.2, V10.4.2: the second use kills the first use's tokens."""
    user = await harness.user("alice@example.com")
    client_id, secret = await create_client(harness.app)
    code = await create_code(harness.app, client_id, user.id)
    first = (await token_request(harness, client_id, secret, exchange(code))).json()
    bearer = harness.bearer(first["access_token"])
    assert (await harness.client.get(harness.records("notes"), headers=bearer)).status_code == 200

    second = await token_request(harness, client_id, secret, exchange(code))
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    refused = await harness.client.get(harness.records("notes"), headers=bearer)
    assert refused.status_code == 401
    assert "invalid_token" in refused.headers["www-authenticate"]
    refresh = await token_request(
        harness, client_id, secret, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert refresh.status_code == 400
    assert refresh.json()["error"] == "invalid_grant"
    reuse = await harness.app.state.db.value(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.tag == "oauth:code_reuse_detected")
    )
    assert reuse == 1


async def test_ten_concurrent_exchanges_of_one_code_one_wins_then_its_grant_is_revoked(harness: Harness) -> None:
    user = await harness.user("alice@example.com")
    client_id, secret = await create_client(harness.app)
    code = await create_code(harness.app, client_id, user.id)
    responses = await asyncio.gather(*(token_request(harness, client_id, secret, exchange(code)) for _ in range(10)))
    won = [response for response in responses if response.status_code == 200]
    assert len(won) == 1
    assert all(response.json()["error"] == "invalid_grant" for response in responses if response not in won)
    [grant] = await grants(harness)
    assert grant.revoked_at is not None
    assert grant.revoke_reason == "code_reuse"
    refused = await harness.client.get(harness.records("notes"), headers=harness.bearer(won[0].json()["access_token"]))
    assert refused.status_code == 401


async def test_a_disabled_user_code_gives_nothing(harness: Harness) -> None:
    user = await harness.user("alice@example.com")
    client_id, secret = await create_client(harness.app)
    code = await create_code(harness.app, client_id, user.id)
    from factories import unit_of_work

    async with unit_of_work(harness.app) as uow:
        await harness.app.state.identity.lock(uow, user, actor_id=None)
    response = await token_request(harness, client_id, secret, exchange(code))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("grant_type=authorization_code&grant_type=client_credentials", "application/x-www-form-urlencoded"),
        ("grant_type=client_credentials&scope=" + "a" * 9000, "application/x-www-form-urlencoded"),
        ('{"grant_type": "client_credentials"}', "application/json"),
        ("grant_type=client_credentials&%ZZ", "application/x-www-form-urlencoded"),
        ("scope=openid", "application/x-www-form-urlencoded"),
    ],
)
async def test_bad_input_is_invalid_request_and_changes_nothing(harness: Harness, body: str, content_type: str) -> None:
    """RFC 6749 §3.1, §5.2: duplicated, oversized or malformed parameters."""
    client_id, secret = await create_client(harness.app)
    from factories.oauth import basic

    response = await harness.client.post(
        TOKEN, content=body.encode(), headers={"content-type": content_type, **basic(client_id, secret)}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert response.headers["cache-control"] == "no-store"
    assert await grants(harness) == []
