"""Revocation (RFC 7009) and introspection (RFC 7662), each for the client
the token was issued to only."""

from __future__ import annotations

from typing import Any

from conftest import token_request
from factories.oauth import REDIRECT_URI, VERIFIER, basic, create_client, create_code
from harness import Harness

REVOKE, INTROSPECT = "/oauth2/revoke", "/oauth2/introspect"


async def issued(harness: Harness) -> tuple[str, str | None, dict[str, Any], Any]:
    user = await harness.user("alice@example.com")
    client_id, secret = await create_client(harness.app)
    code = await create_code(harness.app, client_id, user.id)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": VERIFIER}
    response = await token_request(harness, client_id, secret, form)
    assert response.status_code == 200, response.text
    return client_id, secret, response.json(), user


async def introspect(harness: Harness, client_id: str, secret: str | None, token: str) -> dict[str, Any]:
    response = await harness.client.post(INTROSPECT, data={"token": token}, headers=basic(client_id, secret))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return dict(response.json())


async def test_introspection_describes_live_tokens_to_their_own_client(harness: Harness) -> None:
    client_id, secret, tokens, user = await issued(harness)
    access = await introspect(harness, client_id, secret, tokens["access_token"])
    assert access["active"] is True
    assert (access["client_id"], access["sub"], access["token_type"]) == (client_id, str(user.id), "Bearer")
    assert access["scope"] == "openid email records:*"
    refresh = await introspect(harness, client_id, secret, tokens["refresh_token"])
    assert refresh["active"] is True
    assert refresh["token_type"] == "refresh_token"
    # Another client learns nothing (RFC 7662 §4), nor does anyone of an ID token or rubbish.
    other_id, other_secret = await create_client(harness.app)
    for token in (tokens["access_token"], tokens["refresh_token"]):
        assert await introspect(harness, other_id, other_secret, token) == {"active": False}
    for token in (tokens["id_token"], "rubbish", "a.b.c"):
        assert await introspect(harness, client_id, secret, token) == {"active": False}


async def test_introspection_needs_client_authentication(harness: Harness) -> None:
    _, _, tokens, _ = await issued(harness)
    response = await harness.client.post(INTROSPECT, data={"token": tokens["access_token"]})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_revoking_a_refresh_token_ends_the_grant(harness: Harness) -> None:
    client_id, secret, tokens, _ = await issued(harness)
    form = {"token": tokens["refresh_token"], "token_type_hint": "refresh_token"}
    response = await harness.client.post(REVOKE, data=form, headers=basic(client_id, secret))
    assert response.status_code == 200
    assert (await introspect(harness, client_id, secret, tokens["access_token"])) == {"active": False}
    bearer = harness.bearer(tokens["access_token"])
    assert (await harness.client.get(harness.records("notes"), headers=bearer)).status_code == 401
    refresh = await token_request(
        harness, client_id, secret, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert refresh.status_code == 400


async def test_revoking_an_access_token_ends_it_at_the_next_request(harness: Harness) -> None:
    client_id, secret, tokens, _ = await issued(harness)
    response = await harness.client.post(
        REVOKE,
        data={"token": tokens["access_token"], "token_type_hint": "access_token"},
        headers=basic(client_id, secret),
    )
    assert response.status_code == 200
    bearer = harness.bearer(tokens["access_token"])
    assert (await harness.client.get(harness.records("notes"), headers=bearer)).status_code == 401


async def test_another_client_cannot_revoke_and_unknown_tokens_are_200(harness: Harness) -> None:
    """RFC 7009 §2.2: 200 in any case; the token of another client stays live."""
    client_id, secret, tokens, _ = await issued(harness)
    other_id, other_secret = await create_client(harness.app)
    for token in (tokens["access_token"], tokens["refresh_token"], "unknown"):
        response = await harness.client.post(REVOKE, data={"token": token}, headers=basic(other_id, other_secret))
        assert response.status_code == 200
    assert (await introspect(harness, client_id, secret, tokens["access_token"]))["active"] is True
    unauthenticated = await harness.client.post(REVOKE, data={"token": tokens["access_token"]})
    assert unauthenticated.status_code == 401
    assert (await introspect(harness, client_id, secret, tokens["access_token"]))["active"] is True


async def test_a_public_client_revokes_its_tokens_but_cannot_introspect(harness: Harness) -> None:
    """RFC 7009 §2.1 lets a public client revoke its own tokens; RFC 7662 §2.1 wants the
    caller authorised, which a public client cannot be: invalid_client, as discovery says."""
    user = await harness.user("bob@example.com")
    client_id, _ = await create_client(harness.app, public=True)
    code = await create_code(harness.app, client_id, user.id)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": VERIFIER}
    tokens = (await token_request(harness, client_id, None, form)).json()
    refused = await harness.client.post(INTROSPECT, data={"token": tokens["access_token"], "client_id": client_id})
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    document = (await harness.client.get("/.well-known/oauth-authorization-server")).json()
    assert "none" not in document["introspection_endpoint_auth_methods_supported"]
    assert "none" in document["revocation_endpoint_auth_methods_supported"]
    revoked = await harness.client.post(REVOKE, data={"token": tokens["refresh_token"], "client_id": client_id})
    assert revoked.status_code == 200
    again = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    assert (await token_request(harness, client_id, None, again)).json()["error"] == "invalid_grant"
