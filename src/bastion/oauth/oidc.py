"""OpenID Connect Core 1.0: ID tokens (§2, §3.1.3.6) and the UserInfo endpoint (§5.3).

An ID token says who signed in, for one client: ``iss``, ``sub`` (the user's
id), ``aud`` (the ``client_id``), ``exp``, ``iat``, ``auth_time``, ``nonce``
(as the authorization request sent it), ``amr`` and ``acr``. Its ``typ`` is
``JWT``, not ``at+jwt``, so it is never accepted as an access token
(RFC 9068 §2.1, RFC 8725 §3.11). It is signed with the client's
``id_token_alg`` (RS256 unless the client chose EdDSA or ES256).

Claims by scope (§5.4): ``email`` gives ``email`` and ``email_verified``;
``profile`` has nothing more to give (Bastion keeps no names). A client's
``claims`` map, set by an admin, adds claims from the user fields
``clients.CLAIM_FIELDS`` allows (``email``, ``email_verified``, ``roles``,
``mfa_enabled``), never over a registered claim.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import bindparam, select
from starlette.responses import Response

from bastion.access import Principal, authenticated
from bastion.access.models import UserRole
from bastion.db.database import Queries
from bastion.http.throttle import Throttle
from bastion.identity.models import User
from bastion.oauth.clients import CLAIM_FIELDS, get_client
from bastion.oauth.errors import json_response
from bastion.oauth.resource import bearer_error
from bastion.oauth.rfc9068 import Authentication
from bastion.oauth.service import OAuthService
from bastion.security import half_hash

__all__ = ["ID_TOKEN_TYP", "USER_FIELDS", "id_token", "router", "user_claims"]

ID_TOKEN_TYP = "JWT"  # noqa: S105 - a JOSE typ, not a secret
_USER = select(User.email, User.email_verified_at, User.totp_enabled, User.disabled).where(
    User.id == bindparam("user_id")
)
_ROLES = select(UserRole.role).where(UserRole.user_id == bindparam("user_id")).order_by(UserRole.role)
# The user fields an admin may map into a client's claims (the rest is credentials and counters).
USER_FIELDS = frozenset(CLAIM_FIELDS)
USERINFO_THROTTLE = Throttle("oauth-userinfo", lambda s: s.oauth.token_rate_per_ip)

router = APIRouter(tags=["oauth"])


async def user_claims(
    db: Queries, user_id: uuid.UUID, scopes: Sequence[str], extra: Mapping[str, str]
) -> dict[str, Any] | None:
    """The claims of ``scopes`` (§5.4) and the client's ``extra`` map; None when the user is gone or disabled."""
    user = await db.one(_USER, {"user_id": user_id})
    if user is None or user.disabled:
        return None
    fields: dict[str, Any] = {
        "email": user.email,
        "email_verified": user.email_verified_at is not None,
        "mfa_enabled": bool(user.totp_enabled),
    }
    if "roles" in extra.values():
        fields["roles"] = [row.role for row in await db.all(_ROLES, {"user_id": user_id})]
    claims: dict[str, Any] = {"sub": str(user_id)}
    if "email" in scopes:
        claims["email"], claims["email_verified"] = fields["email"], fields["email_verified"]
    for claim, field in extra.items():
        if field in USER_FIELDS and claim not in _PROTECTED:
            claims[claim] = fields[field]
    return claims


# Claims a client's map must not override: what identifies the token and the sign-in.
_PROTECTED = frozenset(
    {
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "auth_time",
        "nonce",
        "acr",
        "amr",
        "azp",
        "at_hash",
        "cnf",
        "sid",
    }
)


async def id_token(
    oauth: OAuthService,
    db: Queries,
    *,
    client_id: str,
    alg: str,
    extra: Mapping[str, str],
    user_id: uuid.UUID,
    scopes: Sequence[str],
    nonce: str | None,
    authentication: Authentication,
    session_id: uuid.UUID | None = None,
    access_token: str | None = None,
) -> str | None:
    """An ID token (§2) for ``client_id``; None when the user can no longer sign in.

    ``sid`` names the sign-in session (OpenID Back-Channel Logout 1.0 §2.1),
    the one its logout tokens will name; ``at_hash`` binds the access token
    issued with it (§3.1.3.6, §3.3.2.11).
    """
    claims = await user_claims(db, user_id, scopes, extra)
    if claims is None:
        return None
    if session_id is not None:
        claims["sid"] = str(session_id)
    if access_token is not None:
        claims["at_hash"] = half_hash(access_token, alg)
    if authentication.auth_time is not None:
        claims["auth_time"] = int(authentication.auth_time.timestamp())
    if nonce is not None:
        claims["nonce"] = nonce
    if authentication.amr:
        claims["amr"] = list(authentication.amr)
    if authentication.acr:
        claims["acr"] = authentication.acr
    return oauth.signer.sign(
        claims,
        now=oauth.now(),
        ttl_seconds=oauth.config.id_token_ttl,
        typ=ID_TOKEN_TYP,
        alg=alg,
        audience=client_id,
    )


@router.api_route(
    "/oauth2/userinfo",
    methods=["GET", "POST"],
    dependencies=[Depends(USERINFO_THROTTLE)],
    include_in_schema=False,
)
async def userinfo(caller: Annotated[Principal, Depends(authenticated)], request: Request) -> Response:
    """The UserInfo endpoint (§5.3): the claims of the access token's granted scopes.

    An OAuth access token (Bearer, or DPoP with its proof) needs the
    ``openid`` scope; the user's own credential (a Bastion session, an API
    key) sees what ``/api/v1/me`` shows. Refusals carry RFC 6750 §3's
    ``WWW-Authenticate`` (``bastion.oauth.resource``).
    """
    if caller.user_id is None:
        raise bearer_error(request, "insufficient_scope", "This token acts for no user.", status=403)
    db = request.app.state.db
    extra: Mapping[str, str] = {}
    scopes: tuple[str, ...] = ("openid", "email")
    if caller.client_id is not None:
        if "openid" not in caller.scopes:
            raise bearer_error(request, "insufficient_scope", "The access token lacks the openid scope.", status=403)
        client = await get_client(db, caller.client_id)
        extra, scopes = (client.claims if client is not None else {}), caller.scopes
    claims = await user_claims(db, caller.user_id, scopes, extra)
    if claims is None:
        raise bearer_error(request, "invalid_token", "The access token is no longer valid.")
    return json_response(claims)
