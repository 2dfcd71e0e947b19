"""Pushed authorization requests (RFC 9126): stored for the client that
pushed them, used once, before they expire."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from bastion.db import transaction
from bastion.oauth.models import OAuthPushedRequest
from bastion.oauth.rfc9126 import take_pushed
from factories.oauth import REDIRECT_URI, basic, create_client
from harness import Harness

PAR = "/oauth2/par"
REQUEST = {
    "response_type": "code",
    "redirect_uri": REDIRECT_URI,
    "scope": "openid email",
    "state": "af0ifjsldkj",
    "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    "code_challenge_method": "S256",
}


async def push(harness: Harness, client_id: str, secret: str | None, form: dict[str, str]) -> dict[str, object]:
    response = await harness.client.post(PAR, data=form, headers=basic(client_id, secret))
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    return dict(response.json())


async def take(harness: Harness, client_id: str, uri: str) -> dict[str, str] | None:
    async with transaction(harness.app.state.db) as tx:
        return await take_pushed(tx, client_id, uri, now=harness.clock.now())


async def test_a_pushed_request_is_taken_once_by_its_client(harness: Harness) -> None:
    client_id, secret = await create_client(harness.app)
    body = await push(harness, client_id, secret, REQUEST)
    uri = str(body["request_uri"])
    assert uri.startswith("urn:ietf:params:oauth:request_uri:")
    assert body["expires_in"] == harness.settings.oauth.pushed_request_ttl
    other_id, _ = await create_client(harness.app)
    assert await take(harness, other_id, uri) is None  # another client's (§2.1)
    taken = await take(harness, client_id, uri)
    assert taken == {**REQUEST, "client_id": client_id}  # the secret is not kept
    assert await take(harness, client_id, uri) is None  # single-use


async def test_concurrent_takes_of_one_request_uri_give_it_once(harness: Harness) -> None:
    client_id, secret = await create_client(harness.app)
    uri = str((await push(harness, client_id, secret, REQUEST))["request_uri"])
    taken = await asyncio.gather(*(take(harness, client_id, uri) for _ in range(10)))
    assert sum(1 for found in taken if found is not None) == 1


async def test_an_expired_request_uri_is_gone(harness: Harness) -> None:
    client_id, secret = await create_client(harness.app)
    uri = str((await push(harness, client_id, secret, REQUEST))["request_uri"])
    harness.clock.advance(seconds=harness.settings.oauth.pushed_request_ttl)
    assert await take(harness, client_id, uri) is None
    assert await take(harness, client_id, "urn:ietf:params:oauth:request_uri:forged") is None


async def test_bad_pushes_are_refused_and_store_nothing(harness: Harness) -> None:
    client_id, secret = await create_client(harness.app)
    cases = [
        (
            {**REQUEST, "request_uri": "urn:ietf:params:oauth:request_uri:x"},
            basic(client_id, secret),
            "invalid_request",
        ),
        ({**REQUEST, "redirect_uri": "https://evil.example/cb"}, basic(client_id, secret), "invalid_request"),
        ({**REQUEST, "scope": "openid admin:users:read"}, basic(client_id, secret), "invalid_scope"),
        ({**REQUEST, "client_id": "someone-else"}, basic(client_id, secret), "invalid_request"),
        (REQUEST, basic(client_id, "wrong"), "invalid_client"),
        (REQUEST, basic("unknown", secret), "invalid_client"),
    ]
    for form, headers, error in cases:
        response = await harness.client.post(PAR, data=form, headers=headers)
        assert response.status_code in (400, 401), response.text
        assert response.json()["error"] == error, form
    stored = await harness.app.state.db.value(select(func.count()).select_from(OAuthPushedRequest))
    assert stored == 0
