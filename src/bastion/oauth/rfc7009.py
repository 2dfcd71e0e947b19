"""Token revocation (RFC 7009).

A client revokes a refresh token or an access token it holds (§2.1); the
``token_type_hint`` only says where to look first (§2.1). Revoking either
revokes the grant it was issued under, and so every token of that grant
(§2.1 allows it for refresh tokens; for a JWT access token, whose
signature cannot be taken back, the grant is what the API checks at every
request, so revoking the grant is how the token dies at once). For a
client-credentials token that is the client's standing grant: its next
grant starts a new one.

The answer is 200 whether or not the token was known, valid, or the
caller's (§2.2): a token of another client is left alone, and the caller
learns nothing about it.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request
from sqlalchemy import bindparam, select
from starlette.responses import Response

from bastion.access import public
from bastion.audit import EventTag, record_event
from bastion.db.database import Queries
from bastion.http.throttle import Throttle
from bastion.oauth.forms import read_form
from bastion.oauth.models import OAuthGrant, OAuthRefreshToken
from bastion.oauth.rfc7523 import authenticate_client
from bastion.oauth.rfc9068 import GRANT_CLAIM, verify_access_token
from bastion.oauth.service import OAuthService
from bastion.oauth.token import revoke_grants
from bastion.security import InvalidToken, hash_token
from bastion.uow import unit_of_work

__all__ = ["grant_of_token", "router"]

REVOKE_THROTTLE = Throttle("oauth-revoke", lambda s: s.oauth.token_rate_per_ip)
_REFRESH_GRANT = (
    select(OAuthGrant.id, OAuthGrant.client_id)
    .join(OAuthRefreshToken, OAuthRefreshToken.grant_id == OAuthGrant.id)
    .where(OAuthRefreshToken.token_hash == bindparam("token_hash"))
)

router = APIRouter(tags=["oauth"])


async def grant_of_token(
    db: Queries, oauth: OAuthService, token: str, *, hint: str | None
) -> tuple[uuid.UUID, str, str] | None:
    """(grant id, client id, "refresh_token" or "access_token") of a token issued here; None if it is none."""
    kinds = ("access_token", "refresh_token") if hint == "access_token" else ("refresh_token", "access_token")
    for kind in kinds:
        if kind == "refresh_token":
            row = await db.one(_REFRESH_GRANT, {"token_hash": hash_token(token)})
            if row is not None:
                return row.id, row.client_id, kind
        elif token.count(".") == 2:
            try:
                claims = verify_access_token(oauth, token)
            except InvalidToken:
                continue
            if claims is not None:
                try:
                    return uuid.UUID(str(claims[GRANT_CLAIM])), str(claims["client_id"]), kind
                except ValueError:
                    continue
    return None


@router.post("/oauth2/revoke", dependencies=[Depends(public), Depends(REVOKE_THROTTLE)], include_in_schema=False)
async def revoke(request: Request) -> Response:
    """Revoke a token's grant (§2.1); 200 in every case but a failed client authentication (§2.2)."""
    oauth: OAuthService = request.app.state.oauth
    params = await read_form(request)
    async with unit_of_work(request) as uow:
        client = await authenticate_client(request, params, uow.db, oauth)
        found = await grant_of_token(uow.db, oauth, params.required("token"), hint=params.get("token_type_hint"))
        if found is not None and found[1] == client.id:
            grant_id, _, kind = found
            revoked = await revoke_grants(uow.db, grant_id=grant_id, reason="revoked", now=oauth.clock.now())
            record_event(
                uow.db,
                oauth.clock,
                EventTag.OAUTH_TOKEN_REVOKE,
                origin=uow.origin,
                details={"client_id": client.id, "grant_id": str(grant_id), "kind": kind, "revoked": revoked},
            )
    return Response(status_code=200, headers={"Cache-Control": "no-store"})
