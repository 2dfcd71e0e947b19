"""Logout: OpenID Connect RP-Initiated Logout 1.0 and Back-Channel Logout 1.0.

``/oauth2/logout`` (RP-Initiated §2) takes ``id_token_hint`` (an ID token
Bastion signed and still valid: its signature, ``typ`` and ``aud`` are
checked), ``client_id``, ``post_logout_redirect_uri`` (only one the
client registered, compared exactly, §3; otherwise an error page, never a
redirect) and ``state`` (passed back). The user confirms on a page with a
CSRF token; then the browser session and its ``sessions`` row end, every
grant made in that session is revoked, and each client holding one that
registered a ``backchannel_logout_uri`` is sent a logout token
(Back-Channel §2.4: ``typ`` ``logout+jwt``, ``iss``, ``aud``, ``iat``,
``exp``, ``jti``, the ``events`` member, ``sub`` and ``sid``, never a
``nonce``), POSTed after the commit with a short timeout; a client that
fails to answer is logged, and the logout stands (§2.7).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog
from sqlalchemy import bindparam, select

from bastion.audit import EventTag, record_event
from bastion.db.database import Transaction
from bastion.oauth.authorize import PageError
from bastion.oauth.browser import BrowserSessionRow, end_browser_session
from bastion.oauth.clients import Client, get_client
from bastion.oauth.models import OAuthClient, OAuthGrant
from bastion.oauth.service import OAuthService
from bastion.oauth.token import revoke_grants
from bastion.security import InvalidToken
from bastion.uow import UnitOfWork

__all__ = ["BACKCHANNEL_EVENT", "LOGOUT_TOKEN_TTL", "LogoutRequest", "Notice", "end", "send_backchannel", "validate"]

log = structlog.get_logger("bastion.oauth.logout")

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TTL = 120  # seconds: a logout token is used at once (Back-Channel §2.4)
SEND_TIMEOUT = 3.0
_CARRIED = ("client_id", "post_logout_redirect_uri", "state", "id_token_hint")

_GRANTS_OF_SESSION = (
    select(OAuthGrant.id, OAuthGrant.client_id, OAuthClient.backchannel_logout_uri, OAuthClient.id_token_alg)
    .join(OAuthClient, OAuthClient.id == OAuthGrant.client_id)
    .where(OAuthGrant.session_id == bindparam("session_id"), OAuthGrant.revoked_at.is_(None))
)


@dataclass(frozen=True)
class LogoutRequest:
    client: Client | None
    post_logout_redirect_uri: str | None
    state: str | None
    id_token_hint: str | None

    def redirect_url(self) -> str:
        assert self.post_logout_redirect_uri is not None  # noqa: S101 - callers check
        uri = self.post_logout_redirect_uri
        if self.state is None:
            return uri
        return uri + ("&" if "?" in uri else "?") + urlencode({"state": self.state})

    def carried(self) -> list[tuple[str, str]]:
        """The parameters the confirmation form posts again (checked again then)."""
        values = {
            "client_id": self.client.id if self.client else None,
            "post_logout_redirect_uri": self.post_logout_redirect_uri,
            "state": self.state,
            "id_token_hint": self.id_token_hint,
        }
        return [(name, value) for name, value in values.items() if value]


@dataclass(frozen=True)
class Notice:
    """One logout token to POST to one client."""

    uri: str
    token: str
    client_id: str


def _verify_hint(oauth: OAuthService, token: str) -> dict[str, Any]:
    """The claims of an unexpired ID token Bastion signed (its audience is checked by the caller).

    RP-Initiated Logout §4 lets an OP accept an expired hint; Bastion does
    not: an expired one is refused like a forged one, and the RP can send
    ``client_id`` instead.
    """
    try:
        # typ "JWT": an ID token (OpenID Connect Core §2), never an access token.
        return oauth.signer.verify(token, now=oauth.now(), typ="JWT")
    except InvalidToken:
        raise PageError("The sign-out request is not valid.") from None


async def validate(
    tx: Transaction, oauth: OAuthService, params: Mapping[str, str], *, confirmed: bool = False
) -> LogoutRequest:
    """The checked logout request; ``PageError`` if the client or redirect URI cannot be trusted."""
    hint, client_id = params.get("id_token_hint"), params.get("client_id")
    if hint is not None:
        claims = _verify_hint(oauth, hint)
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if client_id is None and len(audiences) == 1 and isinstance(audiences[0], str):
            client_id = audiences[0]
        if client_id not in audiences:
            raise PageError("The sign-out request is not valid.")
    client = await get_client(tx, client_id) if client_id else None
    if client_id is not None and client is None:
        raise PageError("The application that sent you here is not registered.")
    uri = params.get("post_logout_redirect_uri")
    if uri is not None and (client is None or uri not in client.post_logout_redirect_uris):
        raise PageError("The application asked to return to an address it did not register.")
    return LogoutRequest(client, uri, params.get("state"), hint)


async def end(uow: UnitOfWork, oauth: OAuthService, browser: BrowserSessionRow) -> list[Notice]:
    """End the browser session, its session and its grants; the logout tokens to send after the commit."""
    grants = await uow.db.all(_GRANTS_OF_SESSION, {"session_id": browser.session_id})
    await revoke_grants(uow.db, session_id=browser.session_id, reason="logout", now=oauth.clock.now())
    await end_browser_session(uow, oauth, browser, reason="logout")
    record_event(
        uow.db,
        oauth.clock,
        EventTag.OAUTH_LOGOUT,
        origin=uow.origin,
        actor_id=browser.user_id,
        details={"session_id": str(browser.session_id), "grants": len(grants)},
    )
    notices, seen = [], set()
    for grant in grants:
        if grant.backchannel_logout_uri and grant.client_id not in seen:
            seen.add(grant.client_id)
            token = logout_token(oauth, browser.user_id, browser.session_id, grant.client_id, grant.id_token_alg)
            notices.append(Notice(grant.backchannel_logout_uri, token, grant.client_id))
    return notices


def logout_token(oauth: OAuthService, user_id: uuid.UUID, session_id: uuid.UUID, client_id: str, alg: str) -> str:
    """A logout token (Back-Channel Logout 1.0 §2.4): no nonce; ``events`` says what it is."""
    claims = {"sub": str(user_id), "sid": str(session_id), "events": {BACKCHANNEL_EVENT: {}}}
    return oauth.signer.sign(
        claims, now=oauth.now(), ttl_seconds=LOGOUT_TOKEN_TTL, typ="logout+jwt", alg=alg, audience=client_id
    )


async def send_backchannel(oauth: OAuthService, notices: list[Notice]) -> None:
    """POST each logout token (§2.5); a failure is logged, never fatal (§2.7)."""
    if not notices:
        return
    async with httpx.AsyncClient(timeout=SEND_TIMEOUT, follow_redirects=False) as client:
        for notice in notices:
            try:
                answer = await client.post(notice.uri, data={"logout_token": notice.token})
                if answer.status_code != 200:
                    log.warning("back-channel logout refused", client_id=notice.client_id, status=answer.status_code)
            except httpx.HTTPError as error:
                log.warning("back-channel logout failed", client_id=notice.client_id, error=type(error).__name__)
