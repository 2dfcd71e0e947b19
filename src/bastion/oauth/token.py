"""The token endpoint (RFC 6749 §3.2) and the grants it serves.

- ``authorization_code`` (§4.1.3) with PKCE S256 (RFC 7636 §4.5, §4.6): the
  code is claimed with one ``UPDATE … WHERE used_at IS NULL AND expires_at >
  now RETURNING`` (``bastion.db.claims``), bound to the client that asked for
  it and to its exact ``redirect_uri``. A second use of a code means it
  leaked: it is refused and the grant issued from it revoked, with every
  token of it (§4.1.2, RFC 9700 §4.2.4).
- ``refresh_token`` (§6): rotation, one rotation family per grant (RFC 9700
  §4.14.2): every refresh token is single-use and replaced, and a used one
  presented again revokes the whole grant. The scope may narrow, never widen.
- ``client_credentials`` (§4.4): the client acting as itself, with only the
  scopes registered for it; no refresh token, no ID token (§4.4.3).
- ``urn:ietf:params:oauth:grant-type:device_code`` (RFC 8628 §3.4, §3.5).

No implicit grant and no password grant (RFC 9700 §2.1.2, §2.4): they are
``unsupported_grant_type``, like every other name. A grant type must also be
registered for the client (``unauthorized_client``, §5.2).

This path is written natively, async on prebuilt Core statements, rather
than through Authlib's ``AuthorizationServer`` and grant classes: those are
synchronous (their storage hooks would block the event loop, or cost a
thread hop per request), and the target is 1,000 client-credentials grants
per second on one core. Every answer, error or not, is ``Cache-Control:
no-store`` (§5.1; ``oauth.errors.json_response``).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import ColumnElement, bindparam, insert, select, update
from starlette.responses import Response

from bastion.access import public
from bastion.audit import EventTag, Outcome, record_event
from bastion.db.claims import claim, compare_and_set
from bastion.db.database import Transaction
from bastion.http.throttle import Throttle
from bastion.identity.models import User
from bastion.oauth import oidc, rfc9449
from bastion.oauth.clients import Client
from bastion.oauth.errors import OAuthError, json_response
from bastion.oauth.forms import Params, read_form
from bastion.oauth.housekeeping import purge_expired
from bastion.oauth.models import OAuthCode, OAuthDeviceCode, OAuthGrant, OAuthRefreshToken
from bastion.oauth.rfc7523 import authenticate_client
from bastion.oauth.rfc9068 import Authentication, issue_access_token
from bastion.oauth.scopes import OPENID_SCOPES, parse_scopes
from bastion.oauth.service import OAuthService
from bastion.security import constant_time_equals, hash_token, s256, token_urlsafe
from bastion.uow import UnitOfWork, unit_of_work

__all__ = ["DEVICE_CODE", "TOKEN_THROTTLE", "revoke_grants", "router"]

DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
TOKEN_THROTTLE = Throttle("oauth-token", lambda s: s.oauth.token_rate_per_ip)
# RFC 7636 §4.1: code-verifier = 43*128unreserved
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")

router = APIRouter(tags=["oauth"])

# Built once: the token endpoint is the hottest OAuth path.
_CLAIM_CODE = compare_and_set(
    OAuthCode,
    OAuthCode.code_hash == bindparam("code_hash"),
    OAuthCode.client_id == bindparam("client_id"),
    OAuthCode.used_at.is_(None),
    OAuthCode.expires_at > bindparam("now"),
    values={OAuthCode.used_at: bindparam("now"), OAuthCode.grant_id: bindparam("grant_id")},
    returning=[
        OAuthCode.user_id,
        OAuthCode.session_id,
        OAuthCode.redirect_uri,
        OAuthCode.scopes,
        OAuthCode.code_challenge,
        OAuthCode.nonce,
        OAuthCode.auth_time,
        OAuthCode.amr,
        OAuthCode.acr,
        OAuthCode.dpop_jkt,
    ],
)
_SPENT_CODE = select(OAuthCode.used_at, OAuthCode.grant_id, OAuthCode.user_id).where(
    OAuthCode.code_hash == bindparam("code_hash"), OAuthCode.client_id == bindparam("client_id")
)
_USER_DISABLED = select(User.disabled).where(User.id == bindparam("user_id"))
_NEW_GRANT = insert(OAuthGrant)
_NEW_REFRESH = insert(OAuthRefreshToken)
_REVOKE_GRANT = (
    update(OAuthGrant)
    .where(OAuthGrant.id == bindparam("grant_id"), OAuthGrant.revoked_at.is_(None))
    .values(revoked_at=bindparam("now"), revoke_reason=bindparam("reason"))
)
_REFRESH = (
    select(
        OAuthRefreshToken.id.label("token_id"),
        OAuthGrant.id.label("grant_id"),
        OAuthGrant.client_id,
        OAuthGrant.user_id,
        OAuthGrant.scopes,
        OAuthGrant.auth_time,
        OAuthGrant.amr,
        OAuthGrant.acr,
        OAuthGrant.dpop_jkt,
        OAuthGrant.session_id,
        OAuthGrant.revoked_at,
        OAuthGrant.expires_at,
        User.disabled,
    )
    .join(OAuthGrant, OAuthGrant.id == OAuthRefreshToken.grant_id)
    .outerjoin(User, User.id == OAuthGrant.user_id)
    .where(OAuthRefreshToken.token_hash == bindparam("token_hash"))
)
_CLAIM_REFRESH = compare_and_set(
    OAuthRefreshToken,
    OAuthRefreshToken.id == bindparam("token_id"),
    OAuthRefreshToken.used_at.is_(None),
    values={OAuthRefreshToken.used_at: bindparam("now")},
    returning=[OAuthRefreshToken.id],
)
# The client's standing client-credentials grant: one per client, not one per token.
_CLIENT_GRANT = (
    select(OAuthGrant.id)
    .where(
        OAuthGrant.client_id == bindparam("client_id"),
        OAuthGrant.user_id.is_(None),
        OAuthGrant.revoked_at.is_(None),
        OAuthGrant.expires_at > bindparam("after"),
    )
    .order_by(OAuthGrant.created_at.desc())
    .limit(1)
)
_DEVICE = select(OAuthDeviceCode).where(
    OAuthDeviceCode.device_code_hash == bindparam("device_code_hash"),
    OAuthDeviceCode.client_id == bindparam("client_id"),
)
_DEVICE_POLLED = (
    update(OAuthDeviceCode)
    .where(OAuthDeviceCode.device_code_hash == bindparam("device_code_hash"))
    .values(last_polled_at=bindparam("now"))
)
_CLAIM_DEVICE = compare_and_set(
    OAuthDeviceCode,
    OAuthDeviceCode.device_code_hash == bindparam("device_code_hash"),
    OAuthDeviceCode.used_at.is_(None),
    OAuthDeviceCode.approved_at.is_not(None),
    OAuthDeviceCode.expires_at > bindparam("now"),
    values={OAuthDeviceCode.used_at: bindparam("now")},
    returning=[OAuthDeviceCode.user_id, OAuthDeviceCode.scopes, OAuthDeviceCode.approved_at],
)


@router.post(
    "/oauth2/token",
    dependencies=[Depends(public), Depends(TOKEN_THROTTLE)],
    include_in_schema=False,
)
async def token(request: Request) -> Response:
    """The token endpoint (RFC 6749 §3.2): the client authenticates, then its grant is exchanged."""
    oauth: OAuthService = request.app.state.oauth
    params = await read_form(request)
    grant_type = params.required("grant_type")
    exchange = _GRANTS.get(grant_type)
    if exchange is None:
        raise OAuthError("unsupported_grant_type", "This grant type is not supported.")
    # OAuthError is a Problem: the unit of work commits what a refusal records (a reused
    # code's revoked grant, a spent refresh family, a replayed proof, a device poll).
    async with unit_of_work(request) as uow:
        client = await authenticate_client(request, params, uow.db, oauth)
        await purge_expired(uow.db, oauth)
        if grant_type not in client.grant_types:
            raise OAuthError("unauthorized_client", "This client may not use this grant type.")
        proof = await rfc9449.check_proof(request, uow.db, oauth)
        if proof is None and client.require_dpop:
            raise OAuthError("invalid_dpop_proof", "This client must send a DPoP proof.")
        body = await exchange(_Exchange(request, uow, oauth, client, params, proof))
    return json_response(body, headers=rfc9449.nonce_headers(request, oauth))


@dataclass(frozen=True)
class _Exchange:
    """One token request, once its client is authenticated."""

    request: Request
    uow: UnitOfWork
    oauth: OAuthService
    client: Client
    params: Params
    proof: rfc9449.Proof | None

    @property
    def db(self) -> Transaction:
        return self.uow.db

    @property
    def jkt(self) -> str | None:
        return self.proof.jkt if self.proof is not None else None


async def _authorization_code(ex: _Exchange) -> dict[str, Any]:
    """RFC 6749 §4.1.3 with RFC 7636 §4.6."""
    code = ex.params.required("code")
    redirect_uri = ex.params.required("redirect_uri")
    verifier = ex.params.required("code_verifier")
    now, grant_id = ex.oauth.clock.now(), uuid.uuid4()
    code_hash = hash_token(code)
    found = await claim(
        ex.db, _CLAIM_CODE, {"code_hash": code_hash, "client_id": ex.client.id, "now": now, "grant_id": grant_id}
    )
    if found is None:
        spent = await ex.db.one(_SPENT_CODE, {"code_hash": code_hash, "client_id": ex.client.id})
        if spent is not None and spent.used_at is not None and spent.grant_id is not None:
            revoked = await ex.db.execute(
                _REVOKE_GRANT, {"grant_id": spent.grant_id, "now": now, "reason": "code_reuse"}
            )
            record_event(
                ex.db,
                ex.oauth.clock,
                EventTag.OAUTH_CODE_REUSE,
                origin=ex.uow.origin,
                outcome=Outcome.DENIED,
                subject_id=spent.user_id,
                details={"client_id": ex.client.id, "grant_id": str(spent.grant_id), "revoked": revoked},
            )
        raise OAuthError("invalid_grant", "The code is invalid, expired or used.")
    # The code is spent from here on, whatever follows: a wrong verifier burns it.
    if found.redirect_uri != redirect_uri:
        raise OAuthError("invalid_grant", "The redirect_uri differs from the authorization request's.")
    if not _VERIFIER.fullmatch(verifier) or not constant_time_equals(s256(verifier), found.code_challenge):
        raise OAuthError("invalid_grant", "The code_verifier does not match the code_challenge.")
    if found.dpop_jkt is not None and ex.jkt != found.dpop_jkt:  # RFC 9449 §10
        raise OAuthError("invalid_dpop_proof", "The DPoP key differs from the authorization request's.")
    if await ex.db.value(_USER_DISABLED, {"user_id": found.user_id}) is not False:
        raise OAuthError("invalid_grant", "The code is invalid, expired or used.")
    authentication = Authentication(found.auth_time, found.amr or [], found.acr)
    # RFC 9449 §5: a public client's refresh tokens are bound to its DPoP key.
    bound = ex.jkt if ex.client.public else None
    await _new_grant(ex, grant_id, found.user_id, found.scopes, authentication, session_id=found.session_id, jkt=bound)
    return await _tokens(
        ex,
        grant_id,
        found.user_id,
        found.scopes,
        authentication,
        nonce=found.nonce,
        refresh=True,
        id_token=True,
        session_id=found.session_id,
    )


async def _refresh_token(ex: _Exchange) -> dict[str, Any]:
    """RFC 6749 §6, rotating (RFC 9700 §4.14.2)."""
    presented = ex.params.required("refresh_token")
    now = ex.oauth.clock.now()
    found = await ex.db.one(_REFRESH, {"token_hash": hash_token(presented)})
    if found is None or found.client_id != ex.client.id:  # §6: bound to the client it was issued to
        raise OAuthError("invalid_grant", "The refresh token is invalid, expired or revoked.")
    # Before the claim: without its key, a stolen bound token cannot even be spent (RFC 9449 §5).
    if found.dpop_jkt is not None and ex.jkt != found.dpop_jkt:
        raise OAuthError("invalid_dpop_proof", "This refresh token is bound to another DPoP key.")
    await _admit(ex, found.user_id, found.amr)  # before the claim: refused, the token stays usable
    # Of two racing refreshes one wins; the other is the reuse it cannot be told from.
    if await claim(ex.db, _CLAIM_REFRESH, {"token_id": found.token_id, "now": now}) is None:
        if found.revoked_at is None:
            await ex.db.execute(_REVOKE_GRANT, {"grant_id": found.grant_id, "now": now, "reason": "refresh_reuse"})
            record_event(
                ex.db,
                ex.oauth.clock,
                EventTag.OAUTH_REFRESH_REUSE,
                origin=ex.uow.origin,
                outcome=Outcome.DENIED,
                subject_id=found.user_id,
                details={"client_id": ex.client.id, "grant_id": str(found.grant_id)},
            )
        raise OAuthError("invalid_grant", "The refresh token is invalid, expired or revoked.")
    if found.revoked_at is not None or found.expires_at <= now or found.user_id is None or found.disabled is not False:
        raise OAuthError("invalid_grant", "The refresh token is invalid, expired or revoked.")
    scopes = list(found.scopes)
    if "scope" in ex.params:
        asked = parse_scopes(ex.params["scope"])
        if not set(asked) <= set(scopes):  # §6: narrower or equal, never wider
            raise OAuthError("invalid_scope", "The scope is wider than what was granted.")
        scopes = asked
    authentication = Authentication(found.auth_time, found.amr or [], found.acr)
    return await _tokens(
        ex,
        found.grant_id,
        found.user_id,
        scopes,
        authentication,
        nonce=None,
        refresh=True,
        id_token=True,
        session_id=found.session_id,
    )


async def _client_credentials(ex: _Exchange) -> dict[str, Any]:
    """RFC 6749 §4.4: the client as itself, with only its registered (non-OpenID) scopes."""
    registered = [scope for scope in ex.client.scopes if scope not in OPENID_SCOPES]
    scopes = registered
    if "scope" in ex.params:
        scopes = parse_scopes(ex.params["scope"])
        if not set(scopes) <= set(registered):
            raise OAuthError("invalid_scope", "This client is not registered for that scope.")
    now = ex.oauth.clock.now()
    ttl = dt.timedelta(seconds=ex.oauth.config.access_token_ttl)
    grant_id = await ex.db.value(_CLIENT_GRANT, {"client_id": ex.client.id, "after": now + ttl})
    if grant_id is None:
        grant_id = uuid.uuid4()
        await _new_grant(ex, grant_id, None, registered, None, session_id=None, jkt=None)
    return await _tokens(ex, grant_id, None, scopes, None, nonce=None, refresh=False, id_token=False)


async def _device_code(ex: _Exchange) -> dict[str, Any]:
    """RFC 8628 §3.4, §3.5: poll until the user approves, denies, or the code expires."""
    device_code_hash = hash_token(ex.params.required("device_code"))
    now = ex.oauth.clock.now()
    found = await ex.db.one(_DEVICE, {"device_code_hash": device_code_hash, "client_id": ex.client.id})
    if found is None or found.used_at is not None:
        raise OAuthError("invalid_grant", "The device code is invalid or used.")
    if found.expires_at <= now:
        raise OAuthError("expired_token", "The device code has expired.")
    if found.denied_at is not None:
        raise OAuthError("access_denied", "The user denied the request.")
    if found.approved_at is None:
        interval = dt.timedelta(seconds=ex.oauth.config.device_poll_interval)
        await ex.db.execute(_DEVICE_POLLED, {"device_code_hash": device_code_hash, "now": now})
        if found.last_polled_at is not None and now - found.last_polled_at < interval:
            raise OAuthError("slow_down", "Poll less often.")
        raise OAuthError("authorization_pending", "The user has not answered yet.")
    approved = await claim(ex.db, _CLAIM_DEVICE, {"device_code_hash": device_code_hash, "now": now})
    if approved is None or approved.user_id is None:
        raise OAuthError("invalid_grant", "The device code is invalid or used.")
    if await ex.db.value(_USER_DISABLED, {"user_id": approved.user_id}) is not False:
        raise OAuthError("invalid_grant", "The device code is invalid or used.")
    grant_id = uuid.uuid4()
    authentication = Authentication(approved.approved_at, [], None)
    bound = ex.jkt if ex.client.public else None
    await _new_grant(ex, grant_id, approved.user_id, approved.scopes, authentication, session_id=None, jkt=bound)
    return await _tokens(
        ex, grant_id, approved.user_id, approved.scopes, authentication, nonce=None, refresh=True, id_token=True
    )


_GRANTS: dict[str, Callable[[_Exchange], Awaitable[dict[str, Any]]]] = {
    "authorization_code": _authorization_code,
    "refresh_token": _refresh_token,
    "client_credentials": _client_credentials,
    DEVICE_CODE: _device_code,
}


async def _new_grant(
    ex: _Exchange,
    grant_id: uuid.UUID,
    user_id: uuid.UUID | None,
    scopes: list[str],
    authentication: Authentication | None,
    *,
    session_id: uuid.UUID | None,
    jkt: str | None,
) -> None:
    now = ex.oauth.clock.now()
    await ex.db.execute(
        _NEW_GRANT,
        {
            "id": grant_id,
            "client_id": ex.client.id,
            "user_id": user_id,
            "session_id": session_id,
            "scopes": list(scopes),
            "auth_time": authentication.auth_time if authentication else None,
            "amr": list(authentication.amr) if authentication else [],
            "acr": authentication.acr if authentication else None,
            "dpop_jkt": jkt,
            "created_at": now,
            "expires_at": now + dt.timedelta(seconds=ex.oauth.config.refresh_token_ttl),
            "revoked_at": None,
            "revoke_reason": None,
        },
    )


async def _tokens(
    ex: _Exchange,
    grant_id: uuid.UUID,
    user_id: uuid.UUID | None,
    scopes: list[str],
    authentication: Authentication | None,
    *,
    nonce: str | None,
    refresh: bool,
    id_token: bool,
    session_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """The token response (RFC 6749 §5.1; OpenID Connect Core §3.1.3.3)."""
    await _admit(ex, user_id, authentication.amr if authentication else [])
    client, oauth = ex.client, ex.oauth
    access = issue_access_token(
        oauth,
        client_id=client.id,
        alg=client.access_token_alg,
        grant_id=grant_id,
        user_id=user_id,
        scopes=scopes,
        authentication=authentication,
        jkt=ex.jkt,
    )
    body: dict[str, Any] = {
        "access_token": access,
        "token_type": "DPoP" if ex.proof is not None else "Bearer",
        "expires_in": oauth.config.access_token_ttl,
        "scope": " ".join(scopes),
    }
    if refresh and "refresh_token" in client.grant_types:
        body["refresh_token"] = token_urlsafe(32)
        await ex.db.execute(
            _NEW_REFRESH,
            {"grant_id": grant_id, "token_hash": hash_token(body["refresh_token"]), "created_at": oauth.clock.now()},
        )
    if id_token and user_id is not None and authentication is not None and "openid" in scopes:
        signed = await oidc.id_token(
            oauth,
            ex.db,
            client_id=client.id,
            alg=client.id_token_alg,
            extra=client.claims,
            user_id=user_id,
            scopes=scopes,
            nonce=nonce,
            authentication=authentication,
            session_id=session_id,
            access_token=access,
        )
        if signed is None:
            raise OAuthError("invalid_grant", "The user can no longer sign in.")
        body["id_token"] = signed
    record_event(
        ex.db,
        oauth.clock,
        EventTag.OAUTH_TOKEN,
        origin=ex.uow.origin,
        subject_id=user_id,
        details={
            "client_id": client.id,
            "grant_type": ex.params["grant_type"],
            "grant_id": str(grant_id),
            "scope": body["scope"],
            "dpop": ex.proof is not None,
        },
    )
    return body


async def _admit(ex: _Exchange, user_id: uuid.UUID | None, amr: Sequence[str] | None) -> None:
    """During lockdown a grant for a user is a sign-in: only an admin who signed in with a second factor."""
    lockdown = ex.oauth.sessions.lockdown
    if lockdown is not None and user_id is not None:
        await lockdown.admit_sign_in(ex.db, user_id, mfa="otp" in (amr or []))


async def revoke_grants(
    tx: Transaction,
    *,
    session_id: uuid.UUID | None = None,
    grant_id: uuid.UUID | None = None,
    client_id: str | None = None,
    user_id: uuid.UUID | None = None,
    reason: str,
    now: dt.datetime,
) -> int:
    """Revoke the live grants matching every given filter (at least one); how many there were.

    Every token of a revoked grant dies with it: its refresh tokens are
    refused at the token endpoint, its access tokens at the next request
    (the ``principals`` epoch moves with ``revoked_at``, migration 0007).
    Used by logout (``session_id``), consent withdrawal (``user_id`` and
    ``client_id``), RFC 7009 (``grant_id``) and client deletion.
    """
    conditions: list[ColumnElement[bool]] = [OAuthGrant.revoked_at.is_(None)]
    if session_id is not None:
        conditions.append(OAuthGrant.session_id == session_id)
    if grant_id is not None:
        conditions.append(OAuthGrant.id == grant_id)
    if client_id is not None:
        conditions.append(OAuthGrant.client_id == client_id)
    if user_id is not None:
        conditions.append(OAuthGrant.user_id == user_id)
    if len(conditions) == 1:
        raise ValueError("revoke_grants needs at least one filter")
    return await tx.execute(update(OAuthGrant).where(*conditions).values(revoked_at=now, revoke_reason=reason[:64]))


async def revoke_everything(tx: Transaction, *, reason: str, now: dt.datetime) -> tuple[int, int]:
    """Revoke every live grant and spend every unspent code (``bastion incident revoke-all --oauth``).

    How many grants, and how many codes (authorization and device): a code
    issued a moment before would otherwise become a new grant after this.
    """
    grants = await tx.execute(
        update(OAuthGrant).where(OAuthGrant.revoked_at.is_(None)).values(revoked_at=now, revoke_reason=reason[:64])
    )
    # Marked spent, not expired: whatever the token endpoint's clock says, a spent code is refused.
    codes = await tx.execute(update(OAuthCode).where(OAuthCode.used_at.is_(None)).values(used_at=now))
    codes += await tx.execute(update(OAuthDeviceCode).where(OAuthDeviceCode.used_at.is_(None)).values(used_at=now))
    return grants, codes
