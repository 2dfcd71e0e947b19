"""Pushed Authorization Requests (RFC 9126).

A client sends its authorization request's parameters straight to
``/oauth2/par``, authenticated as at the token endpoint (§2.1), and gets
back a ``request_uri`` (``urn:ietf:params:oauth:request_uri:<random>``,
§2.2) to send the browser to ``/oauth2/authorize`` with, instead of the
parameters: they can be neither read nor changed on the way. The URI is
single-use, lives ``oauth.pushed_request_ttl`` seconds, and only the client
that pushed it may use it (``take_pushed``, called by ``/oauth2/authorize``).
A pushed request may not itself carry a ``request_uri`` (§2.1).

What is checked here is what can only be checked with the client
authenticated (its redirect URI, its scopes); ``/oauth2/authorize``
validates the rest when the request is used, as for any request (§2.1).
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Request
from sqlalchemy import bindparam, insert
from starlette.responses import Response

from bastion.access import public
from bastion.audit import EventTag, record_event
from bastion.db.claims import claim, compare_and_set
from bastion.db.database import Transaction
from bastion.http.throttle import Throttle
from bastion.oauth.clients import redirect_uri_matches
from bastion.oauth.errors import OAuthError, json_response
from bastion.oauth.forms import read_form
from bastion.oauth.models import OAuthPushedRequest
from bastion.oauth.rfc7523 import authenticate_client
from bastion.oauth.scopes import parse_scopes
from bastion.oauth.service import OAuthService
from bastion.security import hash_token, token_urlsafe
from bastion.uow import unit_of_work

__all__ = ["REQUEST_URI_PREFIX", "router", "take_pushed"]

REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
PAR_THROTTLE = Throttle("oauth-par", lambda s: s.oauth.authorize_rate_per_ip)
# Client authentication, not part of the authorization request (RFC 6749 §2.3, RFC 7523 §2.2).
_CREDENTIALS = frozenset({"client_secret", "client_assertion", "client_assertion_type"})

router = APIRouter(tags=["oauth"])

_NEW = insert(OAuthPushedRequest)
_TAKE = compare_and_set(
    OAuthPushedRequest,
    OAuthPushedRequest.uri_hash == bindparam("uri_hash"),
    OAuthPushedRequest.client_id == bindparam("client_id"),
    OAuthPushedRequest.used_at.is_(None),
    OAuthPushedRequest.expires_at > bindparam("now"),
    values={OAuthPushedRequest.used_at: bindparam("now")},
    returning=[OAuthPushedRequest.parameters],
)


@router.post(
    "/oauth2/par",
    status_code=201,
    dependencies=[Depends(public), Depends(PAR_THROTTLE)],
    include_in_schema=False,
)
async def push(request: Request) -> Response:
    """Store an authorization request for ``oauth.pushed_request_ttl`` seconds (§2.1, §2.2)."""
    oauth: OAuthService = request.app.state.oauth
    params = await read_form(request)
    if "request_uri" in params:
        raise OAuthError("invalid_request", "A pushed request cannot carry a request_uri.")
    async with unit_of_work(request) as uow:
        client = await authenticate_client(request, params, uow.db, oauth)
        if params.get("client_id", client.id) != client.id:
            raise OAuthError("invalid_request", "The client_id is not the authenticated client's.")
        redirect_uri = params.required("redirect_uri")
        if not redirect_uri_matches(client, redirect_uri):
            raise OAuthError("invalid_request", "The redirect_uri is not registered for this client.")
        if not set(parse_scopes(params.get("scope"))) <= set(client.scopes):
            raise OAuthError("invalid_scope", "This client is not registered for that scope.")
        parameters = {name: value for name, value in params.items() if name not in _CREDENTIALS}
        parameters["client_id"] = client.id
        uri = REQUEST_URI_PREFIX + token_urlsafe(32)
        ttl = oauth.config.pushed_request_ttl
        await uow.db.execute(
            _NEW,
            {
                "uri_hash": hash_token(uri),
                "client_id": client.id,
                "parameters": parameters,
                "expires_at": oauth.clock.now() + dt.timedelta(seconds=ttl),
                "used_at": None,
            },
        )
        record_event(
            uow.db, oauth.clock, EventTag.OAUTH_PUSHED_REQUEST, origin=uow.origin, details={"client_id": client.id}
        )
    return json_response({"request_uri": uri, "expires_in": ttl}, status=201)


async def take_pushed(tx: Transaction, client_id: str, request_uri: str, *, now: dt.datetime) -> dict[str, str] | None:
    """The parameters pushed as ``request_uri`` by ``client_id``, once; None if unknown, used, expired or another's."""
    if not request_uri.startswith(REQUEST_URI_PREFIX) or len(request_uri) > 256:
        return None
    taken = await claim(
        tx,
        _TAKE,
        {"uri_hash": hash_token(request_uri), "client_id": client_id, "now": now},
    )
    return dict(taken.parameters) if taken is not None else None
