"""Discovery: RFC 8414 §3 (``/.well-known/oauth-authorization-server``), OpenID Connect
Discovery 1.0 §4 (``/.well-known/openid-configuration``), and the JWK Set (``/oauth2/jwks``).

Both documents are one: RFC 8414's metadata is OpenID Discovery's plus a few
members. ``issuer`` is ``auth.public_url`` exactly (RFC 8414 §3.3: a client
compares it with the issuer it asked for, and refuses a mismatch), and every
endpoint URL starts with it.

"Lists exactly what is supported": an endpoint appears only if its route is
in the app that serves the document (``_ENDPOINTS``), so a feature that is
not installed is never advertised; the grant types that need an endpoint go
with it; the registration endpoint only while dynamic registration is on.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from bastion.access import public
from bastion.access.guard import every_route
from bastion.oauth.authorize import ACR_VALUES_SUPPORTED
from bastion.oauth.clients import AUTH_METHODS, DEVICE_CODE, TOKEN_ALGORITHMS
from bastion.oauth.scopes import scopes_supported
from bastion.oauth.service import OAuthService

__all__ = ["CLAIMS_SUPPORTED", "discovery_document", "router"]

router = APIRouter(tags=["oauth"])

# metadata member -> the path of the route that implements it.
_ENDPOINTS = {
    "authorization_endpoint": "/oauth2/authorize",
    "token_endpoint": "/oauth2/token",
    "userinfo_endpoint": "/oauth2/userinfo",
    "jwks_uri": "/oauth2/jwks",
    "pushed_authorization_request_endpoint": "/oauth2/par",
    "revocation_endpoint": "/oauth2/revoke",
    "introspection_endpoint": "/oauth2/introspect",
    "end_session_endpoint": "/oauth2/logout",
    "device_authorization_endpoint": "/oauth2/device",
    "registration_endpoint": "/oauth2/register",
}
# OpenID Connect Core §2 and §5.1: what ID tokens and userinfo carry.
CLAIMS_SUPPORTED = (
    "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp", "sid",
    "email", "email_verified",
)  # fmt: skip
# The JWK Set is fetched by every verifier; a short life lets a newly published key be seen soon.
JWKS_MAX_AGE = 60
DISCOVERY_MAX_AGE = 300


def _route_paths(request: Request) -> set[str]:
    """The paths the app serves, as the start-up check sees them (included routers expanded)."""
    return {found.path for found in every_route(request.app)}


def discovery_document(oauth: OAuthService, paths: set[str]) -> dict[str, Any]:
    """The metadata of this server, given the paths of the routes it serves."""
    endpoints = {member: path for member, path in _ENDPOINTS.items() if path in paths}
    if not oauth.config.dynamic_registration:
        endpoints.pop("registration_endpoint", None)
    document: dict[str, Any] = {"issuer": oauth.issuer}
    document |= {member: oauth.url(path) for member, path in endpoints.items()}
    grants = []
    if "authorization_endpoint" in endpoints and "token_endpoint" in endpoints:
        grants += ["authorization_code", "refresh_token"]
    if "token_endpoint" in endpoints:
        grants.append("client_credentials")
        if "device_authorization_endpoint" in endpoints:
            grants.append(DEVICE_CODE)
    document |= {
        "scopes_supported": scopes_supported(oauth.settings),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": grants,
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(TOKEN_ALGORITHMS),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(TOKEN_ALGORITHMS),
        "claims_supported": list(CLAIMS_SUPPORTED),
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        # OpenID Discovery §3 defaults this to true: say that request objects by reference are not taken.
        "request_uri_parameter_supported": False,
        # RFC 9207: authorization responses carry iss.
        "authorization_response_iss_parameter_supported": True,
    }
    if "authorization_endpoint" in endpoints:
        document["prompt_values_supported"] = ["none", "login", "consent"]
        document["acr_values_supported"] = list(ACR_VALUES_SUPPORTED)
    if "token_endpoint" in endpoints:
        document["dpop_signing_alg_values_supported"] = list(TOKEN_ALGORITHMS)
    if "pushed_authorization_request_endpoint" in endpoints:
        document["require_pushed_authorization_requests"] = False
    for endpoint in ("revocation_endpoint", "introspection_endpoint"):
        if endpoint in endpoints:
            prefix = endpoint.removesuffix("_endpoint")
            # RFC 7009 §2.1: a public client may revoke its own tokens; introspection needs a confidential one.
            methods = AUTH_METHODS if prefix == "revocation" else [m for m in AUTH_METHODS if m != "none"]
            document[f"{prefix}_endpoint_auth_methods_supported"] = list(methods)
            document[f"{prefix}_endpoint_auth_signing_alg_values_supported"] = list(TOKEN_ALGORITHMS)
    if "end_session_endpoint" in endpoints:
        # OpenID Back-Channel Logout 1.0 §2.1: logout tokens, with sid.
        document["backchannel_logout_supported"] = True
        document["backchannel_logout_session_supported"] = True
    return document


def _cacheable(body: dict[str, Any], max_age: int) -> Response:
    """Unlike token answers, metadata and public keys may be cached (briefly)."""
    return Response(
        orjson.dumps(body), media_type="application/json", headers={"Cache-Control": f"public, max-age={max_age}"}
    )


def _document(request: Request) -> Response:
    return _cacheable(discovery_document(request.app.state.oauth, _route_paths(request)), DISCOVERY_MAX_AGE)


@router.get("/.well-known/openid-configuration", dependencies=[Depends(public)])
async def openid_configuration(request: Request) -> Response:
    """OpenID Connect Discovery 1.0 §4."""
    return _document(request)


@router.get("/.well-known/oauth-authorization-server", dependencies=[Depends(public)])
async def oauth_authorization_server(request: Request) -> Response:
    """RFC 8414 §3."""
    return _document(request)


@router.get("/oauth2/jwks", dependencies=[Depends(public)])
async def jwks(request: Request) -> Response:
    """The public keys tokens are signed with (RFC 7517 §5), every published one of every algorithm."""
    oauth: OAuthService = request.app.state.oauth
    return _cacheable(oauth.signer.public_jwks(now=oauth.now()), JWKS_MAX_AGE)
