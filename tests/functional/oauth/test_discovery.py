"""Discovery (RFC 8414, OpenID Connect Discovery 1.0) and the JWK Set."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.oauth.scopes import scopes_supported
from harness import Harness

WELL_KNOWN = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")


async def served(h: Harness, path: str) -> bool:
    """Whether the app routes ``path`` (any answer but 404 to GET or POST)."""
    statuses = [(await h.client.request(method, path)).status_code for method in ("GET", "POST")]
    return statuses != [404, 404]


@pytest.mark.parametrize("path", WELL_KNOWN)
async def test_discovery_issuer_is_public_url_and_lists_only_existing_endpoints(harness: Harness, path: str) -> None:
    h = harness
    response = await h.client.get(path)
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    issuer = h.settings.auth.public_url
    assert document["issuer"] == issuer  # exactly, not normalised (RFC 8414 §3.3)
    endpoints = {name: url for name, url in document.items() if name.endswith("_endpoint") or name == "jwks_uri"}
    assert "jwks_uri" in endpoints
    for name, url in endpoints.items():
        assert url.startswith(issuer.rstrip("/") + "/"), name
        assert await served(h, url.removeprefix(issuer.rstrip("/"))), f"{name} is advertised but not served"
    assert "registration_endpoint" not in document  # off by default
    assert document["response_types_supported"] == ["code"]
    assert document["response_modes_supported"] == ["query"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    # OpenID Core §3.1.2.1 acr_values: the step-up the authorization endpoint honours.
    assert document["acr_values_supported"] == ["urn:bastion:pwd", "urn:bastion:mfa"]
    assert document["subject_types_supported"] == ["public"]
    assert document["authorization_response_iss_parameter_supported"] is True
    assert "RS256" in document["id_token_signing_alg_values_supported"]
    assert document["scopes_supported"] == scopes_supported(h.settings)
    assert "records:*" in document["scopes_supported"]
    assert not any(scope.startswith("admin:") for scope in document["scopes_supported"])
    assert set(document["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic", "client_secret_post", "private_key_jwt", "none"
    }  # fmt: skip
    for absent in ("implicit", "password"):
        assert absent not in document["grant_types_supported"]
    assert (await h.client.get(WELL_KNOWN[0])).json() == (await h.client.get(WELL_KNOWN[1])).json()


async def test_grants_follow_their_endpoints(harness: Harness) -> None:
    """No token endpoint, no grant type: nothing is advertised that this app cannot do."""
    document = (await harness.client.get(WELL_KNOWN[0])).json()
    if "token_endpoint" not in document:
        assert document["grant_types_supported"] == []
    if "device_authorization_endpoint" not in document:
        assert "urn:ietf:params:oauth:grant-type:device_code" not in document["grant_types_supported"]


async def test_jwks_has_public_keys_only(harness: Harness) -> None:
    response = await harness.client.get("/oauth2/jwks")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys
    for key in keys:
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & key.keys()
        assert key["kid"]


def test_each_endpoint_brings_only_what_it_implements(harness: Harness) -> None:
    from bastion.oauth.rfc8414 import discovery_document

    oauth = harness.app.state.oauth
    bare = discovery_document(oauth, {"/oauth2/jwks"})
    assert bare["grant_types_supported"] == []
    assert "token_endpoint" not in bare
    assert "backchannel_logout_supported" not in bare
    full = discovery_document(
        oauth,
        {"/oauth2/jwks", "/oauth2/authorize", "/oauth2/token", "/oauth2/device", "/oauth2/logout", "/oauth2/register"},
    )
    assert full["grant_types_supported"] == [
        "authorization_code", "refresh_token", "client_credentials", "urn:ietf:params:oauth:grant-type:device_code"
    ]  # fmt: skip
    assert full["token_endpoint"] == oauth.url("/oauth2/token")
    assert full["backchannel_logout_supported"] is True
    assert "registration_endpoint" not in full  # served, but registration is off


async def test_metadata_and_keys_may_be_cached_briefly_and_nothing_else(harness: Harness) -> None:
    """OpenID Discovery and RFC 7517 sets are public and cacheable (a relying party
    should not fetch them per request); every other answer stays no-store (ASVS V14.3.2)."""
    h = harness
    for path in (*WELL_KNOWN, "/oauth2/jwks"):
        cache_control = (await h.client.get(path)).headers.get_list("cache-control")
        assert len(cache_control) == 1, path
        assert cache_control[0].startswith("public, max-age="), path
    assert (await h.client.get("/healthz")).headers["cache-control"] == "no-store"
    assert (await h.client.get("/api/v1/me")).headers["cache-control"] == "no-store"
