"""Dynamic client registration (RFC 7591): off by default, validated like every registration when on."""

from __future__ import annotations

from typing import Any

import pytest

from harness import CHEAP_ARGON2, Harness, open_harness

WELL_KNOWN = "/.well-known/openid-configuration"


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    return {"oauth": {"dynamic_registration": True}}


async def test_registration_is_off_by_default(make_settings: Any, clock: Any) -> None:
    async with open_harness(make_settings(passwords=CHEAP_ARGON2), clock) as h:
        response = await h.client.post("/oauth2/register", json={"redirect_uris": ["https://app.example/cb"]})
        assert response.status_code == 404
        assert "registration_endpoint" not in (await h.client.get(WELL_KNOWN)).json()


async def test_registration_when_on(harness: Harness) -> None:
    """RFC 7591 §3.2.1: client_id, the secret once, the metadata as registered; V13.3.4:
    client_secret_expires_at is when the secret expires (oauth.client_secret_lifetime from
    now, in seconds since the epoch), not 0 ("never")."""
    document = (await harness.client.get(WELL_KNOWN)).json()
    assert document["registration_endpoint"] == harness.settings.auth.public_url.rstrip("/") + "/oauth2/register"
    response = await harness.client.post(
        "/oauth2/register",
        json={"client_name": "Dyn", "redirect_uris": ["https://app.example/cb"], "unknown_member": 1},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["client_secret"]
    lifetime = harness.settings.oauth.client_secret_lifetime
    assert body["client_secret_expires_at"] == int(harness.clock.now().timestamp() + lifetime)
    assert body["client_secret_expires_at"] > body["client_id_issued_at"]
    assert "secret_expires_at" not in body  # describe()'s ISO form is not RFC 7591's
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert body["redirect_uris"] == ["https://app.example/cb"]
    assert "unknown_member" not in body
    assert response.headers["cache-control"] == "no-store"
    client = await _client(harness, body["client_id"])
    assert client is not None
    assert not client.first_party


async def _client(h: Harness, client_id: str) -> Any:
    from bastion.oauth.clients import get_client

    return await get_client(h.app.state.db, client_id)


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ({"redirect_uris": ["https://app.example/cb#frag"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://*.example/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["http://app.example/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri"),
        ({"redirect_uris": []}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://app.example/cb"], "grant_types": ["implicit"]}, "invalid_client_metadata"),
        (
            {"redirect_uris": ["https://app.example/cb"], "grant_types": ["client_credentials"]},
            "invalid_client_metadata",
        ),
        ({"redirect_uris": ["https://app.example/cb"], "scope": "admin:users:write"}, "invalid_client_metadata"),
        ({"redirect_uris": ["https://app.example/cb"], "response_types": ["token"]}, "invalid_client_metadata"),
        ({"redirect_uris": "https://app.example/cb"}, "invalid_client_metadata"),
        (
            {"redirect_uris": ["https://app.example/cb"], "id_token_signed_response_alg": "none"},
            "invalid_client_metadata",
        ),
    ],
)
async def test_registration_refuses_bad_metadata_and_stores_nothing(
    harness: Harness, metadata: dict[str, Any], error: str
) -> None:
    from bastion.oauth.clients import ClientRegistry

    response = await harness.client.post("/oauth2/register", json=metadata)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    assert await ClientRegistry.of(harness.app.state).list(harness.app.state.db) == []


async def test_registration_is_throttled_per_address(make_settings: Any, clock: Any) -> None:
    settings = make_settings(
        passwords=CHEAP_ARGON2, auth={"register_rate_per_ip": "2/minute"}, oauth={"dynamic_registration": True}
    )
    async with open_harness(settings, clock) as h:
        body = {"redirect_uris": ["https://app.example/cb"]}
        statuses = [(await h.client.post("/oauth2/register", json=body)).status_code for _ in range(3)]
    assert statuses == [201, 201, 429]
