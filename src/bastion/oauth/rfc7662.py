"""Token introspection (RFC 7662).

An authenticated client asks whether a token is live (§2.1) and gets
``{"active": false}`` for anything that is not (§2.2): unknown, expired,
revoked (its grant), of a disabled user, malformed.

Which tokens a client may introspect is the server's call (§2.1, §4):
here, only its own. A token of another client is ``active: false``, as if
unknown, so introspection tells no client about another's tokens or users.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import bindparam, select
from starlette.responses import Response

from bastion.access import public
from bastion.db.database import Queries
from bastion.http.throttle import Throttle
from bastion.identity.models import User
from bastion.oauth.errors import OAuthError, json_response
from bastion.oauth.forms import read_form
from bastion.oauth.models import OAuthGrant, OAuthRefreshToken
from bastion.oauth.rfc7523 import authenticate_client
from bastion.oauth.rfc9068 import GRANT_CLAIM, verify_access_token
from bastion.oauth.service import OAuthService
from bastion.security import InvalidToken, hash_token
from bastion.uow import unit_of_work

__all__ = ["router"]

INTROSPECT_THROTTLE = Throttle("oauth-introspect", lambda s: s.oauth.token_rate_per_ip)
_LIVE_GRANT = (
    select(OAuthGrant.client_id, OAuthGrant.user_id, OAuthGrant.scopes, OAuthGrant.expires_at, User.disabled)
    .outerjoin(User, User.id == OAuthGrant.user_id)
    .where(OAuthGrant.id == bindparam("grant_id"), OAuthGrant.revoked_at.is_(None))
)
_REFRESH = select(OAuthRefreshToken.grant_id, OAuthRefreshToken.created_at).where(
    OAuthRefreshToken.token_hash == bindparam("token_hash"), OAuthRefreshToken.used_at.is_(None)
)
_INACTIVE: dict[str, Any] = {"active": False}

router = APIRouter(tags=["oauth"])


@router.post(
    "/oauth2/introspect", dependencies=[Depends(public), Depends(INTROSPECT_THROTTLE)], include_in_schema=False
)
async def introspect(request: Request) -> Response:
    """The token's state (§2.2), for the client it was issued to."""
    oauth: OAuthService = request.app.state.oauth
    params = await read_form(request)
    token = params.required("token")
    async with unit_of_work(request) as uow:
        client = await authenticate_client(request, params, uow.db, oauth)
        if client.public:
            # §2.1: the caller must be authorised; a public client proves nothing about itself.
            raise OAuthError("invalid_client", "Introspection needs a confidential client.", status=401)
        body = await _describe(uow.db, oauth, token, params.get("token_type_hint"))
    if not body.get("active") or body.get("client_id") != client.id:
        return json_response(_INACTIVE)
    return json_response(body)


async def _describe(db: Queries, oauth: OAuthService, token: str, hint: str | None) -> dict[str, Any]:
    refresh = await db.one(_REFRESH, {"token_hash": hash_token(token)}) if hint != "access_token" else None
    if refresh is not None:
        grant = await _live(db, oauth, refresh.grant_id)
        if grant is None:
            return _INACTIVE
        return {
            "active": True,
            "client_id": grant.client_id,
            "sub": str(grant.user_id) if grant.user_id else grant.client_id,
            "scope": " ".join(grant.scopes),
            "iat": int(refresh.created_at.timestamp()),
            "exp": int(grant.expires_at.timestamp()),
            "iss": oauth.issuer,
            "token_type": "refresh_token",
        }
    return await _describe_access(db, oauth, token) if token.count(".") == 2 else _INACTIVE


async def _describe_access(db: Queries, oauth: OAuthService, token: str) -> dict[str, Any]:
    try:
        claims = verify_access_token(oauth, token)
    except InvalidToken:
        return _INACTIVE
    if claims is None:
        return _INACTIVE
    try:
        grant = await _live(db, oauth, claims[GRANT_CLAIM])
    except ValueError:
        return _INACTIVE
    if grant is None or grant.client_id != claims["client_id"]:
        return _INACTIVE
    body = {"active": True, "token_type": "DPoP" if "cnf" in claims else "Bearer"}
    for name in ("client_id", "sub", "scope", "iss", "aud", "exp", "iat", "nbf", "jti", "cnf", "auth_time", "acr"):
        if name in claims:
            body[name] = claims[name]
    return body


async def _live(db: Queries, oauth: OAuthService, grant_id: Any) -> Any | None:
    grant = await db.one(_LIVE_GRANT, {"grant_id": uuid.UUID(str(grant_id))})
    if grant is None or grant.expires_at <= oauth.clock.now():
        return None
    if grant.user_id is not None and grant.disabled is not False:
        return None
    return grant
