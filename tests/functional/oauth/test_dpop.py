"""DPoP (RFC 9449): tokens bound to a client's key, refused without a fresh
proof of that key, and a proof used once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from bastion.audit.models import AuditEvent
from conftest import token_request
from factories.oauth import REDIRECT_URI, VERIFIER, DPoPKey, create_client, create_code
from harness import Harness

CC = {"grant_type": "client_credentials"}


def now(harness: Harness) -> int:
    return int(harness.clock.now().timestamp())


def url(harness: Harness, path: str) -> str:
    """The URL a proof names: the issuer's (``auth.public_url``), not the Host the request came to."""
    return harness.settings.auth.public_url + path


def proof_header(harness: Harness, key: DPoPKey, method: str, path: str, **claims: Any) -> dict[str, str]:
    return {"DPoP": key.proof(method, url(harness, path), now=now(harness), **claims)}


async def bound_token(harness: Harness, key: DPoPKey, **client: Any) -> tuple[str, str | None, dict[str, Any]]:
    client_id, secret = await create_client(harness.app, scopes=("records:*",), **client)
    response = await token_request(
        harness, client_id, secret, CC, headers=proof_header(harness, key, "POST", "/oauth2/token")
    )
    assert response.status_code == 200, response.text
    return client_id, secret, response.json()


def dpop(harness: Harness, key: DPoPKey, token: str, method: str, path: str) -> dict[str, str]:
    return {"authorization": f"DPoP {token}", **proof_header(harness, key, method, path, access_token=token)}


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
async def test_a_bound_token_works_with_a_proof_of_its_key_only(harness: Harness, alg: str) -> None:
    key = DPoPKey(alg)
    _, _, body = await bound_token(harness, key)
    assert body["token_type"] == "DPoP"
    token = body["access_token"]
    claims = harness.app.state.oauth.signer.verify(token, now=now(harness))
    assert claims["cnf"] == {"jkt": key.jkt}
    path = "/api/v1/collections/notes/records"
    assert (await harness.client.get(path, headers=dpop(harness, key, token, "GET", path))).status_code == 200

    # As a plain bearer token it is refused on every route (RFC 9449 §7.1).
    bearer = await harness.client.get(path, headers=harness.bearer(token))
    assert bearer.status_code == 401
    assert 'error="invalid_token"' in bearer.headers["www-authenticate"]
    # A proof of another key, for another method or URL, or without ath: refused.
    other = DPoPKey()
    refused = [
        dpop(harness, other, token, "GET", path),
        dpop(harness, key, token, "POST", path),
        dpop(harness, key, token, "GET", "/api/v1/me"),
        {"authorization": f"DPoP {token}", **proof_header(harness, key, "GET", path)},
        {"authorization": f"DPoP {token}"},
    ]
    for headers in refused:
        assert (await harness.client.get(path, headers=headers)).status_code == 401


async def test_a_proof_is_used_once(harness: Harness) -> None:
    """V10.3.5 (jti replay): the same proof twice is refused and audited."""
    key = DPoPKey()
    _, _, body = await bound_token(harness, key)
    path = "/api/v1/collections/notes/records"
    headers = dpop(harness, key, body["access_token"], "GET", path)
    assert (await harness.client.get(path, headers=headers)).status_code == 200
    assert (await harness.client.get(path, headers=headers)).status_code == 401
    events = await harness.app.state.db.value(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.tag == "oauth:dpop_replay")
    )
    assert events == 1


async def test_ten_concurrent_token_requests_with_one_proof_one_wins(harness: Harness) -> None:
    key = DPoPKey()
    client_id, secret = await create_client(harness.app, scopes=("records:*",))
    headers = proof_header(harness, key, "POST", "/oauth2/token")
    responses = await asyncio.gather(
        *(token_request(harness, client_id, secret, CC, headers=headers) for _ in range(10))
    )
    assert sorted(response.status_code for response in responses) == [200] + [400] * 9
    assert {response.json().get("error") for response in responses if response.status_code == 400} == {
        "invalid_dpop_proof"
    }


@pytest.mark.parametrize(
    "proof",
    [
        lambda h, k: k.proof("GET", url(h, "/oauth2/token"), now=now(h)),  # another method
        lambda h, k: k.proof("POST", "https://evil.example/oauth2/token", now=now(h)),  # another server
        lambda h, k: k.proof("POST", url(h, "/oauth2/token"), now=now(h), iat=now(h) - 3600),  # stale
        lambda h, k: k.proof("POST", url(h, "/oauth2/token"), now=now(h), iat=now(h) + 3600),  # from the future
        lambda h, k: "not-a-jwt",
        lambda h, k: "e30.e30.",  # {}.{} unsigned
    ],
)
async def test_bad_proofs_at_the_token_endpoint_issue_nothing(harness: Harness, proof: Any) -> None:
    client_id, secret = await create_client(harness.app, scopes=("records:*",))
    response = await token_request(harness, client_id, secret, CC, headers={"DPoP": proof(harness, DPoPKey())})
    assert (response.status_code, response.json()["error"]) == (400, "invalid_dpop_proof")
    issued = await harness.app.state.db.value(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.tag == "oauth:token")
    )
    assert issued == 0


async def test_a_client_that_requires_dpop_gets_no_plain_token(harness: Harness) -> None:
    client_id, secret = await create_client(harness.app, scopes=("records:*",), require_dpop=True)
    response = await token_request(harness, client_id, secret, CC)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_dpop_proof")


async def test_a_public_client_refresh_token_is_bound_to_its_key(harness: Harness) -> None:
    key = DPoPKey()
    user = await harness.user("alice@example.com")
    client_id, _ = await create_client(harness.app, public=True)
    code = await create_code(harness.app, client_id, user.id)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": VERIFIER}
    first = await token_request(
        harness, client_id, None, form, headers=proof_header(harness, key, "POST", "/oauth2/token")
    )
    assert first.status_code == 200, first.text
    refresh = {"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]}
    plain = await token_request(harness, client_id, None, refresh)
    assert plain.json()["error"] == "invalid_dpop_proof"
    stolen = await token_request(
        harness, client_id, None, refresh, headers=proof_header(harness, DPoPKey(), "POST", "/oauth2/token")
    )
    assert stolen.json()["error"] == "invalid_dpop_proof"
    own = await token_request(
        harness, client_id, None, refresh, headers=proof_header(harness, key, "POST", "/oauth2/token")
    )
    assert own.status_code == 200, own.text


async def test_a_code_bound_by_dpop_jkt_needs_that_key(harness: Harness) -> None:
    """RFC 9449 §10: the authorization request's dpop_jkt binds the code."""
    key = DPoPKey()
    user = await harness.user("alice@example.com")
    client_id, secret = await create_client(harness.app)
    code = await create_code(harness.app, client_id, user.id, dpop_jkt=key.jkt)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": VERIFIER}
    other = await token_request(
        harness, client_id, secret, form, headers=proof_header(harness, DPoPKey(), "POST", "/oauth2/token")
    )
    assert other.json()["error"] == "invalid_dpop_proof"


class TestNonce:
    @pytest.fixture
    def harness_settings(self) -> dict[str, Any]:
        from factories.data import COLLECTIONS

        return {"collections": COLLECTIONS, "oauth": {"dpop_nonce": True}}

    async def test_the_server_nonce_is_required_then_accepted(self, harness: Harness) -> None:
        """RFC 9449 §8: use_dpop_nonce with a DPoP-Nonce header, then the retry with it passes."""
        key = DPoPKey()
        client_id, secret = await create_client(harness.app, scopes=("records:*",))
        first = await token_request(
            harness, client_id, secret, CC, headers=proof_header(harness, key, "POST", "/oauth2/token")
        )
        assert (first.status_code, first.json()["error"]) == (400, "use_dpop_nonce")
        nonce = first.headers["dpop-nonce"]
        retry = await token_request(
            harness, client_id, secret, CC, headers=proof_header(harness, key, "POST", "/oauth2/token", nonce=nonce)
        )
        assert retry.status_code == 200, retry.text
        token = retry.json()["access_token"]
        path = "/api/v1/collections/notes/records"
        without = await harness.client.get(path, headers=dpop(harness, key, token, "GET", path))
        assert without.status_code == 401
        assert 'error="use_dpop_nonce"' in without.headers["www-authenticate"]
        headers = {
            "authorization": f"DPoP {token}",
            **proof_header(harness, key, "GET", path, access_token=token, nonce=nonce),
        }
        assert (await harness.client.get(path, headers=headers)).status_code == 200


async def test_a_bound_token_as_bearer_is_refused_by_every_route_that_takes_a_credential(harness: Harness) -> None:
    """RFC 9449 §7.1 on the whole API: every route reading a credential refuses it (401), on both listeners.

    Checked route by route from the app itself, so a route added later is checked too.
    """
    import re
    import uuid

    from bastion.access import requirement_of
    from bastion.access.guard import every_route

    key = DPoPKey()
    _, _, body = await bound_token(harness, key)
    bearer = harness.bearer(body["access_token"])
    admin = harness.admin_client
    assert admin is not None
    probed = 0
    for route in every_route(harness.app):
        requirement = requirement_of(route)
        if requirement in (None, "public") or "*" in route.methods:
            continue
        path = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: "notes" if m[1] == "name" else str(uuid.uuid4()), route.path)
        for method in sorted(set(route.methods) - {"HEAD", "OPTIONS"}):
            for listener in (harness.client, admin):
                kwargs: dict[str, Any] = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
                response = await listener.request(method, path, headers=bearer, **kwargs)
                assert response.status_code in (401, 404), f"{method} {path}: {response.status_code}"
                probed += response.status_code == 401
    assert probed > 10  # the routes were there to refuse it


async def test_expired_replay_markers_are_purged_but_live_ones_stay(harness: Harness) -> None:
    from bastion.oauth import housekeeping
    from bastion.oauth.models import OAuthReplay

    key = DPoPKey()
    client_id, secret = await create_client(harness.app, scopes=("records:*",))
    old = proof_header(harness, key, "POST", "/oauth2/token")
    assert (await token_request(harness, client_id, secret, CC, headers=old)).status_code == 200
    harness.clock.advance(seconds=3 * harness.settings.oauth.dpop_window)
    housekeeping._next_purge = 0.0  # as when a minute has passed on the monotonic clock
    fresh = proof_header(harness, key, "POST", "/oauth2/token")
    assert (await token_request(harness, client_id, secret, CC, headers=fresh)).status_code == 200
    kept = await harness.app.state.db.value(select(func.count()).select_from(OAuthReplay))
    assert kept == 1  # the old marker went; the new one stays until it, too, cannot matter
    assert (await token_request(harness, client_id, secret, CC, headers=fresh)).status_code == 400


async def test_the_dpop_scheme_carries_only_bound_oauth_tokens(harness: Harness) -> None:
    """A session token, an API key or an unbound OAuth token under ``DPoP`` is refused, proof or not."""
    from factories.access import create_api_key

    key = DPoPKey()
    user = await harness.user("alice@example.com")
    session = (await harness.sign_in(user))["access_token"]
    api_key = await create_api_key(harness.app, user)
    client_id, secret = await create_client(harness.app, scopes=("records:*",))
    unbound = (await token_request(harness, client_id, secret, CC)).json()["access_token"]
    path = "/api/v1/collections/notes/records"
    for token in (session, api_key, unbound):
        response = await harness.client.get(path, headers=dpop(harness, key, token, "GET", path))
        assert response.status_code == 401
