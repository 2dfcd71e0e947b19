"""Bastion's API as a resource server for OAuth access tokens (RFC 9068 §4, RFC 6750, RFC 9449 §7).

An access token issued here (``typ`` ``at+jwt`` with a ``gid``) is accepted
by ``/api/v1`` and ``/oauth2/userinfo`` when:

- the signer accepts it (signature, ``typ``, ``iss``, ``aud``, ``exp``);
- a DPoP-bound one (``cnf.jkt``) comes as ``Authorization: DPoP`` with a
  proof of that key for this request (RFC 9449 §7.1); as ``Bearer`` it is
  refused everywhere, since a stolen bound token must be useless alone;
- its grant is live (not revoked, not expired) and its user enabled: asked
  at every request, remembered only under the ``principals`` epoch, which
  a revoked grant, a disabled user or a changed client moves (0006, 0007).

What it may do is what was granted *and* what the user still holds: the
token's permission scopes (``oauth.scopes.GRANTABLE_PERMISSIONS``) narrow
the user's current permissions, never widen them. A client-credentials
token holds only the scopes the client is registered for now.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy import bindparam, select

from bastion.access.models import Role, UserRole
from bastion.access.permissions import OWN_ACCOUNT, Permission, grants
from bastion.access.principal import Principal
from bastion.access.principals import Remembered
from bastion.db import transaction
from bastion.db.database import Queries
from bastion.identity.models import User
from bastion.oauth import rfc9449
from bastion.oauth.errors import OAuthError
from bastion.oauth.models import OAuthClient, OAuthGrant
from bastion.oauth.rfc9068 import GRANT_CLAIM, verify_access_token
from bastion.oauth.service import OAuthService
from bastion.security import InvalidToken

__all__ = ["ResourceToken", "bearer_error", "delegated_principal", "resource_token"]

_GRANT = (
    select(
        OAuthGrant.revoked_at,
        OAuthGrant.expires_at,
        OAuthGrant.user_id,
        OAuthGrant.client_id,
        OAuthClient.scopes.label("client_scopes"),
        User.disabled,
        UserRole.role,
        Role.permissions,
    )
    .select_from(OAuthGrant)
    .join(OAuthClient, OAuthClient.id == OAuthGrant.client_id)
    .outerjoin(User, User.id == OAuthGrant.user_id)
    .outerjoin(UserRole, UserRole.user_id == OAuthGrant.user_id)
    .outerjoin(Role, Role.name == UserRole.role)
    .where(OAuthGrant.id == bindparam("grant_id"))
)
_NO_USER = uuid.UUID(int=0)


@dataclass(frozen=True)
class ResourceToken:
    """A live OAuth access token: who, for which client, with what."""

    principal: Principal
    scopes: tuple[str, ...]

    @property
    def user_id(self) -> uuid.UUID | None:
        return self.principal.user_id


def bearer_error(request: Request, error: str, description: str, *, status: int = 401) -> OAuthError:
    """An RFC 6750 §3 refusal, naming both schemes a client may use (RFC 9449 §7.1)."""
    challenge = f'error="{error}", error_description="{description}"'
    algs = " ".join(rfc9449.DPOP_ALGORITHMS)
    headers = {"WWW-Authenticate": f'Bearer {challenge}, DPoP algs="{algs}", {challenge}'}
    return OAuthError(error, description, status=status, headers=headers)


def _is_permission_scope(scope: str) -> bool:
    return scope == Permission.ME_READ or scope.startswith("records:")


def _narrowed(scopes: tuple[str, ...], held: frozenset[str]) -> frozenset[str]:
    """The permissions both the token's scopes and ``held`` grant (wildcards on either side)."""
    granted = [scope for scope in scopes if _is_permission_scope(scope)]
    return frozenset({scope for scope in granted if grants(held, scope)} | {p for p in held if grants(granted, p)})


async def _base(oauth: OAuthService, db: Queries, grant_id: uuid.UUID) -> Remembered:
    """The grant's principal before the token's scopes narrow it (cached under the epoch)."""
    rows = await db.all(_GRANT, {"grant_id": grant_id})
    if not rows:
        raise InvalidToken
    live = rows[0]
    if live.revoked_at is not None:
        raise InvalidToken
    if live.user_id is None:
        permissions = frozenset(live.client_scopes or ())
        roles: frozenset[str] = frozenset()
    else:
        if live.disabled is not False:
            raise InvalidToken
        roles = frozenset(row.role for row in rows if row.role is not None)
        # Every user holds their own account (``permissions.OWN_ACCOUNT``); of it, a token may be granted me:read.
        held = OWN_ACCOUNT | {p for row in rows if row.permissions for p in row.permissions}
        # And never beyond what the client is registered for now (an admin may narrow it).
        permissions = _narrowed(tuple(live.client_scopes or ()), frozenset(held))
    principal = Principal(
        user_id=live.user_id,
        roles=roles,
        permissions=permissions,
        mfa=False,
        client_id=live.client_id,
        grant_id=grant_id,
    )
    return Remembered(principal, live.user_id or _NO_USER, live.expires_at, None)


async def _claims(request: Request, oauth: OAuthService, scheme: str, token: str) -> dict[str, Any] | None:
    try:
        claims = verify_access_token(oauth, token)
    except InvalidToken:
        raise bearer_error(request, "invalid_token", "The access token is invalid or expired.") from None
    if claims is None:
        return None
    jkt = (claims.get("cnf") or {}).get("jkt") if isinstance(claims.get("cnf"), dict) else None
    if jkt is None and scheme == "dpop":
        raise bearer_error(request, "invalid_token", "This access token is not bound to a DPoP key.")
    if jkt is not None:
        if scheme != "dpop":
            raise bearer_error(request, "invalid_token", "This access token is bound to a DPoP key.")
        # Its own transaction: the proof's jti is spent even when the request then fails.
        refused: OAuthError | None = None
        async with transaction(request.app.state.db) as tx:
            try:
                proof = await rfc9449.check_proof(request, tx, oauth, access_token=token)
                if proof is None or proof.jkt != jkt:
                    refused = bearer_error(request, "invalid_dpop_proof", "A DPoP proof of the token's key is needed.")
            except OAuthError as error:
                refused = error
        if refused is not None:
            if refused.error == "use_dpop_nonce":
                refused = OAuthError(
                    "use_dpop_nonce",
                    refused.description,
                    status=401,
                    headers={"WWW-Authenticate": 'DPoP error="use_dpop_nonce"', **refused.headers},
                )
            elif "WWW-Authenticate" not in refused.headers:
                refused = bearer_error(request, refused.error, refused.description or refused.error)
            raise refused
    return claims


async def resource_token(
    request: Request, oauth: OAuthService, *, db: Queries | None = None, required_scope: str | None = None
) -> ResourceToken:
    """The request's OAuth access token, checked; ``OAuthError`` with RFC 6750 §3 headers otherwise."""
    header = request.headers.get("authorization")
    if header is None:
        raise OAuthError("invalid_token", status=401, headers={"WWW-Authenticate": "Bearer, DPoP"})
    scheme, _, token = header.partition(" ")
    scheme, token = scheme.lower(), token.strip()
    if scheme not in ("bearer", "dpop") or not token:
        raise bearer_error(request, "invalid_request", "Send Authorization: Bearer or DPoP.", status=400)
    found = await _token(request, oauth, db or request.app.state.db, scheme, token)
    if found is None:
        raise bearer_error(request, "invalid_token", "The access token is invalid or expired.")
    if required_scope is not None and required_scope not in found.scopes:
        raise bearer_error(request, "insufficient_scope", "The access token lacks a needed scope.", status=403)
    return found


async def _token(request: Request, oauth: OAuthService, db: Queries, scheme: str, token: str) -> ResourceToken | None:
    # The proof's transaction (in _claims) ends before the first statement on ``db``: a
    # caller's unit of work takes its pooled connection only then, so a request never
    # holds one connection while waiting for a second (no pool-exhaustion deadlock).
    claims = await _claims(request, oauth, scheme, token)
    if claims is None:
        return None
    try:
        grant_id = uuid.UUID(str(claims[GRANT_CLAIM]))
    except ValueError:
        raise bearer_error(request, "invalid_token", "The access token is invalid or expired.") from None
    cache = oauth.access.principals
    epoch = await cache.current_epoch(db)
    key = ("oauth-grant", grant_id)
    known = cache.get(key, epoch)
    if known is None:
        try:
            known = await _base(oauth, db, grant_id)
        except InvalidToken:
            raise bearer_error(request, "invalid_token", "The access token has been revoked.") from None
        cache.put(key, epoch, known)
    base = known.principal
    if (known.expires_at is not None and known.expires_at <= oauth.clock.now()) or base.client_id != claims[
        "client_id"
    ]:
        raise bearer_error(request, "invalid_token", "The access token has been revoked.")
    if base.user_id is not None and str(base.user_id) != claims.get("sub"):
        raise bearer_error(request, "invalid_token", "The access token is invalid or expired.")
    scopes = tuple(str(claims["scope"]).split())
    principal = Principal(
        user_id=base.user_id,
        roles=base.roles,
        permissions=_narrowed(scopes, base.permissions),
        mfa=False,
        client_id=base.client_id,
        grant_id=grant_id,
        scopes=scopes,
    )
    return ResourceToken(principal, scopes)


async def delegated_principal(request: Request, db: Queries, scheme: str, token: str) -> Principal | None:
    """``bastion.access``'s hook: the principal of an OAuth access token; None for any other token.

    Refusals become the problem+json 401 of Bastion's API, with the RFC 6750
    ``WWW-Authenticate`` challenge kept.
    """
    from bastion.access.errors import InvalidCredential

    oauth: OAuthService = request.app.state.oauth
    try:
        found = await _token(request, oauth, db, scheme, token)
    except OAuthError as refused:
        raise InvalidCredential(headers=refused.headers) from None
    return found.principal if found is not None else None
