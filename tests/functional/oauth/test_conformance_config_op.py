"""The OpenID conformance suite's Config OP test plan (``oidcc-config-certification-test-plan``).

The plan is one module, ``oidcc-discovery-endpoint-verification``
(``OIDCCDiscoveryEndpointVerification``, static client, discovery), whose
conditions are asserted one by one below, in the suite's order; the JWKS
checks its ``FetchServerKeys``/``ValidateServerJWKs`` make, and RFC 8414's
own document at ``/.well-known/oauth-authorization-server``, follow.

ASVS 5.0: V10.7.1 (discovery lists exactly what is supported), V12.2.1
(every endpoint over HTTPS).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from conformance import Suite, suite

__all__ = ["suite"]  # the fixture, imported for pytest

# OpenID Discovery §3 and RFC 8414 §2: what a provider's metadata may hold;
# CheckForUnexpectedParametersInServerMetadata flags anything else.
KNOWN_METADATA = {
    "issuer", "authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri", "registration_endpoint",
    "scopes_supported", "response_types_supported", "response_modes_supported", "grant_types_supported",
    "acr_values_supported", "subject_types_supported", "id_token_signing_alg_values_supported",
    "id_token_encryption_alg_values_supported", "id_token_encryption_enc_values_supported",
    "userinfo_signing_alg_values_supported", "userinfo_encryption_alg_values_supported",
    "userinfo_encryption_enc_values_supported", "request_object_signing_alg_values_supported",
    "request_object_encryption_alg_values_supported", "request_object_encryption_enc_values_supported",
    "token_endpoint_auth_methods_supported", "token_endpoint_auth_signing_alg_values_supported",
    "display_values_supported", "claim_types_supported", "claims_supported", "service_documentation",
    "claims_locales_supported", "ui_locales_supported", "claims_parameter_supported", "request_parameter_supported",
    "request_uri_parameter_supported", "require_request_uri_registration", "op_policy_uri", "op_tos_uri",
    "revocation_endpoint", "revocation_endpoint_auth_methods_supported",
    "revocation_endpoint_auth_signing_alg_values_supported", "introspection_endpoint",
    "introspection_endpoint_auth_methods_supported", "introspection_endpoint_auth_signing_alg_values_supported",
    "code_challenge_methods_supported", "end_session_endpoint", "frontchannel_logout_supported",
    "frontchannel_logout_session_supported", "backchannel_logout_supported", "backchannel_logout_session_supported",
    "check_session_iframe", "pushed_authorization_request_endpoint", "require_pushed_authorization_requests",
    "dpop_signing_alg_values_supported", "authorization_response_iss_parameter_supported",
    "device_authorization_endpoint", "tls_client_certificate_bound_access_tokens", "mtls_endpoint_aliases",
    "signed_metadata", "introspection_signing_alg_values_supported", "authorization_details_types_supported",
    "prompt_values_supported", "require_signed_request_object",
}  # fmt: skip
# BCP 47 language tags, the syntax CheckDiscEndpointLocalesSyntax accepts.
LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Z][a-z]{3})?(-([A-Z]{2}|[0-9]{3}))?$")
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")


def endpoints(config: dict[str, Any]) -> list[str]:
    return [value for name, value in config.items() if name.endswith(("_endpoint", "_uri")) and isinstance(value, str)]


async def test_oidcc_discovery_endpoint_verification(suite: Suite) -> None:
    response = await suite.harness.client.get("/.well-known/openid-configuration")
    config = response.json()
    # CheckDiscoveryEndpointReturnedJsonContentType
    assert response.headers["content-type"].split(";")[0] == "application/json"
    # OIDCCCheckDiscEndpointResponseTypesSupported: "code" (Basic OP); nothing implicit or hybrid.
    assert config["response_types_supported"] == ["code"]
    # CheckDiscEndpointDiscoveryUrl and CheckDiscEndpointIssuer: the issuer, exactly, and its /.well-known.
    assert config["issuer"] == suite.issuer == suite.harness.settings.auth.public_url
    # CheckDiscEndpointIssuerIsValidUrl: https, no query, no fragment.
    issuer = httpx.URL(config["issuer"])
    assert issuer.scheme == "https"
    assert not issuer.query
    assert not issuer.fragment
    # ValidateServerMetadataAgainstSchema (the types of OpenID Discovery §3).
    for name, value in config.items():
        if name.endswith("_supported") and name not in {
            "claims_parameter_supported", "request_parameter_supported", "request_uri_parameter_supported",
            "frontchannel_logout_supported", "frontchannel_logout_session_supported", "backchannel_logout_supported",
            "backchannel_logout_session_supported", "authorization_response_iss_parameter_supported",
        }:  # fmt: skip
            assert isinstance(value, list), name
            assert all(isinstance(item, str) for item in value), name
        elif name.endswith("_supported") or name.startswith("require_"):
            assert isinstance(value, bool), name
    # CheckForUnexpectedParametersInServerMetadata
    assert set(config) <= KNOWN_METADATA, set(config) - KNOWN_METADATA
    # CheckDiscEndpointSubjectTypesSupported
    assert set(config["subject_types_supported"]) <= {"public", "pairwise"}
    assert config["subject_types_supported"]
    # OIDCCCheckDiscEndpointIdTokenSigningAlgValuesSupported: RS256 (OpenID Core §15.1), never none.
    assert "RS256" in config["id_token_signing_alg_values_supported"]
    assert "none" not in config["id_token_signing_alg_values_supported"]
    # OIDCCCheckDiscEndpointUserinfoSigningAlgValuesSupported: when present, no "none" only.
    if "userinfo_signing_alg_values_supported" in config:
        assert config["userinfo_signing_alg_values_supported"] != ["none"]
    # CheckDiscEndpointAuthorizationEndpoint, …TokenEndpoint, …UserinfoEndpoint: present, under the issuer.
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint"):
        assert config[name] == suite.issuer + {"authorization_endpoint": "/oauth2/authorize",
                                               "token_endpoint": "/oauth2/token",
                                               "userinfo_endpoint": "/oauth2/userinfo"}[name]  # fmt: skip
    # CheckDiscEndpointRegistrationEndpoint: dynamic registration is off by default (issue's §7), so not listed.
    assert "registration_endpoint" not in config
    # CheckJwksUri
    assert config["jwks_uri"] == suite.issuer + "/oauth2/jwks"
    # CheckDiscEndpointRequestParameterSupported, …RequestUriParameterSupported: no request objects.
    assert config["request_parameter_supported"] is False
    assert config["request_uri_parameter_supported"] is False
    # CheckDiscEndpointClaimsParameterSupported: not supported (and said so, or absent = false).
    assert config.get("claims_parameter_supported", False) is False
    # OIDCCCheckDiscEndpointClaimsSupported: the claims Bastion can return, sub among them.
    assert {"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "amr", "acr", "email", "email_verified"} <= set(
        config["claims_supported"]
    )
    # OIDCCCheckDiscEndpointGrantTypesSupported: code and refresh; never implicit or password.
    grants = set(config["grant_types_supported"])
    assert {"authorization_code", "refresh_token", "client_credentials"} <= grants
    assert not {"implicit", "password"} & grants
    # CheckDiscEndpointScopesSupportedContainsOpenId, …ScopesSupportedSyntax; Bastion's permission scopes listed.
    assert "openid" in config["scopes_supported"]
    assert all(SCOPE_TOKEN.match(scope) for scope in config["scopes_supported"])
    assert {"offline_access", "me:read", "records:*"} <= set(config["scopes_supported"])
    # CheckDiscEndpointLocalesSyntax, CheckDiscEndpointLocalesCanonicalCasing
    for name in ("ui_locales_supported", "claims_locales_supported"):
        assert all(LOCALE.match(tag) for tag in config.get(name, [])), name
    # CheckDiscEndpointAllEndpointsAreHttps
    for url in endpoints(config):
        assert url.startswith("https://"), url
    # EnsureServerConfigurationCodeChallengeMethodsSupportedIsAnArray: S256 only (plain refused, RFC 9700 §2.1.1).
    assert config["code_challenge_methods_supported"] == ["S256"]
    # What the Basic OP modules rely on, listed exactly.
    assert set(config["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic", "client_secret_post", "private_key_jwt", "none",
    }  # fmt: skip
    assert config["authorization_response_iss_parameter_supported"] is True  # RFC 9207 §3
    # acr_values (OpenID Core §3.1.2.1) step up to the second factor: say which (oidcc-ensure-request-with-acr-values).
    assert config["acr_values_supported"] == ["urn:bastion:pwd", "urn:bastion:mfa"]
    assert config.get("response_modes_supported", ["query"]) == ["query"]


async def test_oidcc_discovery_endpoint_verification_jwks(suite: Suite) -> None:
    """FetchServerKeys, CheckServerKeysIsValid, CheckForKeyIdInServerJWKs, CheckDistinctKeyIdValueInServerJWKs."""
    response = await suite.harness.client.get(suite.path("jwks_uri"))
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] in ("application/json", "application/jwk-set+json")
    keys = response.json()["keys"]
    assert keys
    kids = [key["kid"] for key in keys]
    assert len(kids) == len(set(kids))
    private = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}
    for key in keys:
        assert not private & set(key), key["kid"]  # public parts only
        assert key.get("use", "sig") == "sig"
        assert key["kty"] in ("RSA", "EC", "OKP")
    # Every alg discovery offers for ID tokens has a key to verify it.
    offered = {key.get("alg") for key in keys}
    assert set(suite.config["id_token_signing_alg_values_supported"]) <= offered


async def test_rfc8414_authorization_server_metadata_matches(suite: Suite) -> None:
    """RFC 8414 §3: the same issuer and endpoints at /.well-known/oauth-authorization-server."""
    response = await suite.harness.client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["issuer"] == suite.issuer
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri", "revocation_endpoint",
                 "introspection_endpoint", "pushed_authorization_request_endpoint"):  # fmt: skip
        assert metadata[name] == suite.config[name], name
