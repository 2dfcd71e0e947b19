"""Dynamic client registration (RFC 7591), off unless ``oauth.dynamic_registration``.

``POST /oauth2/register`` takes the client metadata of RFC 7591 §2 as JSON
and answers §3.2.1 (201, ``client_id``, once ``client_secret``, and the
metadata as registered) or §3.2.2 (400, ``invalid_redirect_uri`` or
``invalid_client_metadata``). The metadata is validated exactly as the
command line and the admin API validate it (``ClientRegistry.validate``).

Anyone who can reach the server may register, so a registered client gets
no more than a user's consent will give it: never ``first_party`` (which
skips consent), never ``client_credentials`` (a token that acts as the
client itself, with the scopes it gave itself). Unknown metadata is
ignored (§2). The route is throttled per address, and answers 404 while
registration is off, as if it did not exist. A secret expires
``oauth.client_secret_lifetime`` after registration; ``client_secret_expires_at``
says when (§3.2.1, seconds since the epoch), and a self-registered client has
no owner, so its reminder goes to ``alerts.mail_to``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from bastion.access import public
from bastion.http.problems import NotFound
from bastion.http.throttle import Throttle
from bastion.oauth.clients import ClientMetadata, ClientRegistry, InvalidClientMetadata
from bastion.oauth.errors import OAuthError, json_response
from bastion.uow import unit_of_work

__all__ = ["REGISTER_BY_ADDRESS", "metadata_from_json", "router"]

router = APIRouter(tags=["oauth"])
REGISTER_BY_ADDRESS = Throttle("oauth:register:ip", lambda s: s.auth.register_rate_per_ip)


def _strings(body: dict[str, Any], name: str) -> tuple[str, ...]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidClientMetadata("invalid_client_metadata", f"{name} must be an array of strings")
    return tuple(value)


def _string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidClientMetadata("invalid_client_metadata", f"{name} must be a string")
    return value


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidClientMetadata("invalid_client_metadata", f"{name} must be a boolean")
    return value


def metadata_from_json(body: Any) -> ClientMetadata:
    """RFC 7591 §2 metadata as a ``ClientMetadata`` (types checked; values by ``validate``)."""
    if not isinstance(body, dict):
        raise InvalidClientMetadata("invalid_client_metadata", "the body must be a JSON object")
    if _strings(body, "response_types") not in ((), ("code",)):
        raise InvalidClientMetadata("invalid_client_metadata", 'response_types must be ["code"]')
    jwks = body.get("jwks")
    if jwks is not None and not isinstance(jwks, dict):
        raise InvalidClientMetadata("invalid_client_metadata", "jwks must be a JSON object")
    scope = _string(body, "scope")
    return ClientMetadata(
        name=_string(body, "client_name") or "Unnamed client",
        redirect_uris=_strings(body, "redirect_uris"),
        token_endpoint_auth_method=_string(body, "token_endpoint_auth_method"),
        grant_types=_strings(body, "grant_types"),
        scopes=tuple(scope.split(" ")) if scope else (),
        jwks=jwks,
        jwks_uri=_string(body, "jwks_uri"),
        require_par=_flag(body, "require_pushed_authorization_requests"),
        require_dpop=_flag(body, "dpop_bound_access_tokens"),
        id_token_alg=_string(body, "id_token_signed_response_alg") or "RS256",
        access_token_alg=_string(body, "access_token_signed_response_alg") or "RS256",
        backchannel_logout_uri=_string(body, "backchannel_logout_uri"),
        post_logout_redirect_uris=_strings(body, "post_logout_redirect_uris"),
    )


@router.post(
    "/oauth2/register",
    status_code=201,
    dependencies=[Depends(public), Depends(REGISTER_BY_ADDRESS)],
    responses={400: {"description": "RFC 7591 §3.2.2 error"}, 404: {"description": "Registration is off"}},
)
async def register(request: Request) -> Response:
    """RFC 7591 §3.1: register a client; §3.2.1 on success."""
    state = request.app.state
    if not state.settings.oauth.dynamic_registration:
        raise NotFound
    registry = ClientRegistry.of(state)
    try:
        metadata = metadata_from_json(await request.json())
        if "client_credentials" in metadata.grant_types:
            raise InvalidClientMetadata(
                "invalid_client_metadata", "client_credentials is not available to self-registered clients"
            )
        async with unit_of_work(request) as uow:
            client, secret = await registry.create(uow, dataclasses.replace(metadata, first_party=False), dynamic=True)
    except InvalidClientMetadata as refused:
        raise OAuthError(refused.error, refused.message) from None
    body = {
        key: value
        for key, value in client.describe().items()
        if value is not None
        and key not in {"first_party", "public", "created_at", "secret_rotated_at", "secret_expires_at", "claims"}
    }
    body["client_id_issued_at"] = int(client.created_at.timestamp()) if client.created_at else 0
    if secret is not None:
        assert client.secret_expires_at is not None  # noqa: S101 - create sets it with a secret
        body["client_secret"] = secret
        # RFC 7591 §3.2.1: "Time at which the client secret will expire", in seconds since the epoch.
        body["client_secret_expires_at"] = int(client.secret_expires_at.timestamp())
    return json_response(body, status=201)
