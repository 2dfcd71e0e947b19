"""ID tokens (OpenID Connect Core §2, §3.1.3.6) and the UserInfo endpoint (§5.3)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from bastion.db import transaction
from bastion.oauth.token import revoke_grants
from conftest import token_request
from factories.oauth import REDIRECT_URI, VERIFIER, DPoPKey, create_client, create_code
from harness import Harness

USERINFO = "/oauth2/userinfo"


def header_of(token: str) -> dict[str, Any]:
    segment = token.split(".", maxsplit=1)[0]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


async def code_tokens(
    harness: Harness, user: Any, scopes: tuple[str, ...], *, headers: dict[str, str] | None = None, **client: Any
) -> tuple[str, dict[str, Any]]:
    client_id, secret = await create_client(harness.app, **client)
    code = await create_code(harness.app, client_id, user.id, scopes=scopes, amr=("pwd", "otp"))
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": VERIFIER}
    response = await token_request(harness, client_id, secret, form, headers=headers)
    assert response.status_code == 200, response.text
    return client_id, response.json()


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_the_id_token_is_for_the_client_signed_with_its_algorithm(harness: Harness, alg: str) -> None:
    user = await harness.user("alice@example.com")
    client_id, body = await code_tokens(harness, user, ("openid", "email"), alg=alg)
    id_token = body["id_token"]
    assert header_of(id_token)["alg"] == alg
    assert header_of(id_token)["typ"] == "JWT"
    assert header_of(body["access_token"])["typ"] == "at+jwt"
    claims = harness.app.state.oauth.signer.verify(
        id_token, now=int(harness.clock.now().timestamp()), typ="JWT", audience=client_id
    )
    assert claims["iss"] == harness.settings.auth.public_url
    assert (claims["sub"], claims["aud"]) == (str(user.id), client_id)
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["auth_time"] == int(harness.clock.now().timestamp())
    assert claims["amr"] == ["pwd", "otp"]
    assert (claims["email"], claims["email_verified"]) == ("alice@example.com", True)
    # §3.1.3.6: the left half of the access token's hash, with the ID token alg's hash (SHA-512 for Ed25519).
    digest = hashlib.new("sha512" if alg == "EdDSA" else "sha256", body["access_token"].encode()).digest()
    assert claims["at_hash"] == base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


async def test_claims_follow_the_scopes_and_the_admins_claim_map(harness: Harness) -> None:
    user = await harness.user("alice@example.com")
    claims_map = {"account": "email", "two_factor": "mfa_enabled", "groups": "roles"}
    client_id, body = await code_tokens(harness, user, ("openid",), claims=claims_map)
    claims = harness.app.state.oauth.signer.verify(
        body["id_token"], now=int(harness.clock.now().timestamp()), typ="JWT", audience=client_id
    )
    assert "email" not in claims  # no email scope
    assert claims["account"] == "alice@example.com"
    assert claims["two_factor"] is False
    assert claims["groups"] == ["user"]
    assert claims["sub"] == str(user.id)


async def test_userinfo_answers_the_granted_claims(harness: Harness) -> None:
    user = await harness.user("alice@example.com")
    _, body = await code_tokens(harness, user, ("openid", "email"))
    for method in ("GET", "POST"):
        response = await harness.client.request(method, USERINFO, headers=harness.bearer(body["access_token"]))
        assert response.status_code == 200, response.text
        assert response.json() == {"sub": str(user.id), "email": "alice@example.com", "email_verified": True}
        assert response.headers["cache-control"] == "no-store"


async def test_userinfo_refuses_what_is_not_a_live_openid_token(harness: Harness) -> None:
    """RFC 6750 §3: the errors come in WWW-Authenticate."""
    user = await harness.user("alice@example.com")
    _, without_openid = await code_tokens(harness, user, ("records:*",))
    refused = await harness.client.get(USERINFO, headers=harness.bearer(without_openid["access_token"]))
    assert refused.status_code == 403
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]

    assert (await harness.client.get(USERINFO)).status_code == 401
    forged = await harness.client.get(USERINFO, headers=harness.bearer("e30.e30.e30"))
    assert forged.status_code == 401
    assert "invalid_token" in forged.headers["www-authenticate"]

    client_id, secret = await create_client(harness.app, scopes=("records:*",))
    cc = await token_request(harness, client_id, secret, {"grant_type": "client_credentials"})
    assert (await harness.client.get(USERINFO, headers=harness.bearer(cc.json()["access_token"]))).status_code == 403

    _, live = await code_tokens(harness, user, ("openid",))
    async with transaction(harness.app.state.db) as tx:
        await revoke_grants(tx, user_id=user.id, reason="test", now=harness.clock.now())
    revoked = await harness.client.get(USERINFO, headers=harness.bearer(live["access_token"]))
    assert revoked.status_code == 401


async def test_userinfo_with_a_dpop_bound_token(harness: Harness) -> None:
    key = DPoPKey()
    user = await harness.user("alice@example.com")
    token_proof = {"DPoP": key.proof("POST", harness.settings.auth.public_url + "/oauth2/token", now=_now(harness))}
    _, body = await code_tokens(harness, user, ("openid",), headers=token_proof)
    token = body["access_token"]
    proof = key.proof("GET", harness.settings.auth.public_url + USERINFO, access_token=token, now=_now(harness))
    response = await harness.client.get(USERINFO, headers={"authorization": f"DPoP {token}", "DPoP": proof})
    assert response.status_code == 200, response.text
    assert (await harness.client.get(USERINFO, headers=harness.bearer(token))).status_code == 401


def _now(harness: Harness) -> int:
    return int(harness.clock.now().timestamp())


async def test_the_id_token_names_the_sign_in_session_and_logout_ends_its_grant(harness: Harness) -> None:
    """Back-Channel Logout 1.0 §2.1: ``sid`` is the session its logout token will name."""
    import uuid

    user = await harness.user("alice@example.com")
    session = await harness.sign_in(user)
    sid = harness.app.state.oauth.signer.verify(session["access_token"], now=_now(harness))["sid"]
    client_id, secret = await create_client(harness.app)
    code = await create_code(harness.app, client_id, user.id, session_id=uuid.UUID(sid))
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": VERIFIER}
    body = (await token_request(harness, client_id, secret, form)).json()
    claims = harness.app.state.oauth.signer.verify(body["id_token"], now=_now(harness), typ="JWT", audience=client_id)
    assert claims["sid"] == sid
    refreshed = await token_request(
        harness, client_id, secret, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    )
    again = harness.app.state.oauth.signer.verify(
        refreshed.json()["id_token"], now=_now(harness), typ="JWT", audience=client_id
    )
    assert again["sid"] == sid
    async with transaction(harness.app.state.db) as tx:
        assert await revoke_grants(tx, session_id=uuid.UUID(sid), reason="logout", now=harness.clock.now()) == 1
    refused = await harness.client.get(USERINFO, headers=harness.bearer(refreshed.json()["access_token"]))
    assert refused.status_code == 401
