"""The hosted pages' browser sessions and their CSRF defence.

A browser that signs in on the hosted pages (``bastion.pages``) gets one
cookie, ``__Host-bastion``: 32 random bytes, stored only as a hash, naming
one ``BrowserSession`` row, which names one ``sessions`` row opened through
``SessionService`` like any other sign-in. Revoking that session (from the
API's session list, a password change, an admin) ends the browser session
too: every read joins the session and asks whether it is still live.

The cookie is ``__Host-`` prefixed, ``Secure``, ``HttpOnly``,
``SameSite=Lax``, ``Path=/`` and carries no ``Domain`` (RFC 6265bis §4.1.3.2):
only this origin, over TLS, can set or read it. Only ``/oauth2/authorize``
and the hosted pages read it; the ``/api/v1`` routes never do (they take a
bearer credential in the Authorization header and nothing else), which is
why that API needs no CSRF defence.

Every form carries a synchronizer token (OWASP CSRF cheat sheet) tied to a
second cookie, ``__Host-bastion-csrf``, which every page sets when the
browser has none (before sign-in too: a forged sign-in, "login CSRF", is
refused as well). The token is a one-way digest of that cookie's random
value, compared in constant time; a cross-site page can neither read the
cookie nor compute the token. ``Origin`` and ``Sec-Fetch-Site``, when the
browser sends them, must also say the form came from this origin (under
the pages' ``Referrer-Policy: no-referrer`` Chromium sends ``Origin: null``,
which says nothing either way: ``Sec-Fetch-Site`` then decides).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from sqlalchemy import bindparam, delete, insert, select
from starlette.responses import Response

from bastion.db.database import Queries
from bastion.oauth.models import BrowserSession
from bastion.oauth.service import OAuthService
from bastion.security import constant_time_equals, hash_token, token_urlsafe
from bastion.sessions.models import Session
from bastion.uow import UnitOfWork

__all__ = [
    "COOKIE",
    "CSRF_COOKIE",
    "BrowserSessionRow",
    "CsrfRefused",
    "browser_session_of",
    "check_csrf",
    "clear_browser_cookie",
    "csrf_token",
    "current_browser_session",
    "end_browser_session",
    "open_browser_session",
    "set_browser_cookie",
    "set_csrf_cookie",
]

COOKIE = "__Host-bastion"
CSRF_COOKIE = "__Host-bastion-csrf"
# A cookie value that is not one of ours is not worth a database lookup.
_MAX_COOKIE = 128

_NEW = insert(BrowserSession)
_LIVE = (
    select(
        BrowserSession.token_hash,
        BrowserSession.session_id,
        BrowserSession.user_id,
        BrowserSession.auth_time,
        BrowserSession.amr,
        BrowserSession.expires_at,
    )
    .join(Session, Session.id == BrowserSession.session_id)
    .where(
        BrowserSession.token_hash == bindparam("token_hash"),
        BrowserSession.expires_at > bindparam("now"),
        Session.revoked_at.is_(None),
        Session.expires_at > bindparam("now"),
    )
)
_END = delete(BrowserSession).where(BrowserSession.token_hash == bindparam("token_hash"))


@dataclass(frozen=True)
class BrowserSessionRow:
    """A live browser session: who signed in, when (``auth_time``) and how (``amr``, RFC 8176)."""

    token_hash: str
    session_id: uuid.UUID
    user_id: uuid.UUID
    auth_time: dt.datetime
    amr: list[str]
    expires_at: dt.datetime

    @property
    def mfa(self) -> bool:
        return "otp" in self.amr


class CsrfRefused(Exception):
    """A form without the right synchronizer token, or sent from another origin."""


def _oauth(request: Request) -> OAuthService:
    service: OAuthService = request.app.state.oauth
    return service


async def open_browser_session(
    uow: UnitOfWork, oauth: OAuthService, user_id: uuid.UUID, *, amr: list[str], mfa: bool
) -> str:
    """A new browser session of ``user_id`` (and its ``sessions`` row); the cookie's value.

    The session is opened by ``SessionService.open``, as an API sign-in is,
    so it is listed, revocable and audited the same way. The refresh token
    that call issues is dropped unseen: only its hash is ever stored.
    """
    pair = await oauth.sessions.open(uow, user_id, mfa=mfa, user_agent=uow.origin.user_agent or "")
    _, session_id = oauth.sessions.verify_access_token(pair.access_token)
    value, now = token_urlsafe(32), oauth.clock.now()
    await uow.db.execute(
        _NEW,
        {
            "token_hash": hash_token(value),
            "session_id": session_id,
            "user_id": user_id,
            "auth_time": now,
            "amr": amr,
            "created_at": now,
            "expires_at": now + dt.timedelta(seconds=oauth.config.browser_session_ttl),
        },
    )
    return value


def _cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    # __Host-: Secure, Path=/ and no Domain, or the browser drops it (RFC 6265bis §4.1.3.2).
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="lax")


def set_browser_cookie(response: Response, value: str, *, max_age: int | None = None) -> None:
    """Set the browser-session cookie (a session cookie unless ``max_age`` is given)."""
    _cookie(response, COOKIE, value, max_age)


def clear_browser_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="lax")


def _cookie_value(request: Request, name: str) -> str | None:
    value = request.cookies.get(name)
    return value if value and len(value) <= _MAX_COOKIE else None


async def current_browser_session(request: Request, db: Queries) -> BrowserSessionRow | None:
    """The request's live browser session: unexpired, and its ``sessions`` row not revoked."""
    value = _cookie_value(request, COOKIE)
    return None if value is None else await browser_session_of(db, _oauth(request), value)


async def browser_session_of(db: Queries, oauth: OAuthService, value: str) -> BrowserSessionRow | None:
    """The live browser session a cookie value names, or None."""
    row = await db.one(_LIVE, {"token_hash": hash_token(value), "now": oauth.clock.now()})
    if row is None:
        return None
    return BrowserSessionRow(row.token_hash, row.session_id, row.user_id, row.auth_time, list(row.amr), row.expires_at)


async def end_browser_session(uow: UnitOfWork, oauth: OAuthService, browser: BrowserSessionRow, *, reason: str) -> None:
    """End the browser session and revoke its ``sessions`` row."""
    await uow.db.execute(_END, {"token_hash": browser.token_hash})
    await oauth.sessions.revoke(uow, browser.session_id, user_id=browser.user_id, reason=reason)


# --- CSRF -----------------------------------------------------------------


def _token_of(cookie: str) -> str:
    # One-way: the token in the page does not give the cookie away.
    return hash_token("bastion-csrf\x00" + cookie)


_NEW_CSRF = "bastion.new_csrf_cookie"


def csrf_token(request: Request) -> str:
    """The synchronizer token for a form on this page; ``set_csrf_cookie`` then sets the cookie if it is new."""
    cookie = _cookie_value(request, CSRF_COOKIE) or request.scope.get(_NEW_CSRF)
    if cookie is None:
        cookie = request.scope[_NEW_CSRF] = token_urlsafe(32)
    return _token_of(cookie)


def set_csrf_cookie(request: Request, response: Response) -> None:
    """Give the browser the CSRF cookie ``csrf_token`` made for this request, if it made one."""
    new = request.scope.get(_NEW_CSRF)
    if new is not None:
        _cookie(response, CSRF_COOKIE, new, None)


def check_csrf(request: Request, form: Any, issuer: str) -> None:
    """Refuse a form post whose token does not match the CSRF cookie, or that another site sent."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise CsrfRefused
    origin = request.headers.get("origin")
    # "null": what browsers send under Referrer-Policy: no-referrer (the spine's); it tells nothing.
    if origin is not None and origin != "null" and origin != _origin_of(issuer):
        raise CsrfRefused
    cookie = _cookie_value(request, CSRF_COOKIE)
    sent = form.get("csrf_token") if form is not None else None
    if cookie is None or not isinstance(sent, str) or not constant_time_equals(sent, _token_of(cookie)):
        raise CsrfRefused


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
