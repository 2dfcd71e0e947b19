"""The authorization endpoint: RFC 6749 §4.1.1-§4.1.2, RFC 7636 §4.3, RFC 9207, OpenID Connect Core §3.1.2.

What a request asks for is checked in the order that decides where an error
may go (RFC 6749 §4.1.2.1): until the client and its redirect URI are known
to be registered, an error is a page shown to the user (``PageError``),
never a redirect, since an unchecked redirect URI would make Bastion an
open redirector and could hand a code to an attacker. After that, errors go
back to the client's redirect URI with ``error``, ``state`` and ``iss``
(``RedirectError``).

Then: ``response_type=code`` only (no implicit grant, RFC 9700 §2.1.2);
PKCE with ``S256`` for every client (plain and missing refused, RFC 9700
§2.1.1); scopes within the client's; ``prompt``, ``max_age``,
``login_hint``, ``nonce`` and ``acr_values`` as OpenID Connect Core
§3.1.2.1 says; a pushed request (RFC 9126 §4) replacing the query, and
required for clients registered with ``require_par``; ``dpop_jkt``
(RFC 9449 §10) stored with the code.

A request that needs the user (a sign-in, a consent) is kept server-side as
a *pending* request, named by a random handle the hosted pages carry
(``bastion.pages.oauth``), so nothing of it can be changed in the browser,
and it is used once. The code is a row of ``OAuthCode`` (stored hashed);
the token endpoint claims it.

ACR values (``acr_values_supported``): ``urn:bastion:pwd`` (a password)
and ``urn:bastion:mfa`` (a password and a second factor). Asking for
``urn:bastion:mfa`` makes a browser session signed in with a password only
sign in again with the second factor, when the account has one (an account
without one gets ``urn:bastion:pwd``: ``acr_values`` is a voluntary claim,
Core §3.1.2.1, and the ID token says what was done).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from sqlalchemy import bindparam, insert, select

from bastion.db.claims import claim, compare_and_set
from bastion.db.database import Queries, Transaction
from bastion.http.throttle import Throttle
from bastion.oauth.browser import BrowserSessionRow
from bastion.oauth.clients import Client, get_client, redirect_uri_matches
from bastion.oauth.errors import OAuthError
from bastion.oauth.models import OAuthCode, OAuthConsent, OAuthPushedRequest
from bastion.oauth.rfc9126 import take_pushed
from bastion.oauth.scopes import parse_scopes
from bastion.oauth.service import OAuthService
from bastion.security import hash_token, token_urlsafe

__all__ = [
    "ACR_MFA",
    "ACR_PWD",
    "ACR_VALUES_SUPPORTED",
    "AUTHORIZE_BY_ADDRESS",
    "AuthorizationRequest",
    "Consent",
    "Outcome",
    "PageError",
    "RedirectError",
    "SignIn",
    "decide",
    "deny",
    "issue_code",
    "load_pending",
    "save_pending",
    "validate",
]

ACR_PWD = "urn:bastion:pwd"  # noqa: S105 - an ACR name, not a password
ACR_MFA = "urn:bastion:mfa"
ACR_VALUES_SUPPORTED = (ACR_PWD, ACR_MFA)
AUTHORIZE_BY_ADDRESS = Throttle("oauth:authorize:ip", lambda s: s.oauth.authorize_rate_per_ip)
# How long a request waits for the user to sign in and consent.
PENDING_TTL = 600
_PENDING = "bastion-pending\x00"
# RFC 7636 §4.2: 43-128 characters of the unreserved set (S256 gives 43).
_CHALLENGE = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_LONG_AGO = dt.datetime.min.replace(tzinfo=dt.UTC)
_PROMPTS = frozenset({"none", "login", "consent", "select_account"})
_MAX_NONCE = 512
_MAX_HINT = 254

_NEW_CODE = insert(OAuthCode)
_NEW_PENDING = insert(OAuthPushedRequest)
_PENDING_ROW = select(OAuthPushedRequest.client_id, OAuthPushedRequest.parameters).where(
    OAuthPushedRequest.uri_hash == bindparam("uri_hash"),
    OAuthPushedRequest.used_at.is_(None),
    OAuthPushedRequest.expires_at > bindparam("now"),
)
_TAKE_PENDING = compare_and_set(
    OAuthPushedRequest,
    OAuthPushedRequest.uri_hash == bindparam("uri_hash"),
    OAuthPushedRequest.used_at.is_(None),
    OAuthPushedRequest.expires_at > bindparam("now"),
    values={OAuthPushedRequest.used_at: bindparam("now")},
    returning=[OAuthPushedRequest.uri_hash],
)
_CONSENT = select(OAuthConsent.scopes).where(
    OAuthConsent.user_id == bindparam("user_id"), OAuthConsent.client_id == bindparam("client_id")
)


class PageError(Exception):
    """An error shown on Bastion's error page: the redirect URI cannot be trusted (yet)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RedirectError(Exception):
    """An error sent back to the client's (checked) redirect URI (RFC 6749 §4.1.2.1)."""

    def __init__(self, target: AuthorizationRequest, error: str, description: str | None = None) -> None:
        OAuthError(error)  # an unknown code is a bug: refuse it here
        super().__init__(error)
        self.target = target
        self.error = error
        self.description = description


@dataclass(frozen=True)
class AuthorizationRequest:
    """A validated authorization request (RFC 6749 §4.1.1 and OpenID Connect Core §3.1.2.1)."""

    client: Client
    redirect_uri: str
    state: str | None
    scopes: tuple[str, ...] = ()
    code_challenge: str = ""
    nonce: str | None = None
    prompt: frozenset[str] = frozenset()
    max_age: int | None = None
    login_hint: str | None = None
    acr_values: tuple[str, ...] = ()
    dpop_jkt: str | None = None
    # When the user-agent first brought it: prompt=login wants a sign-in after that.
    received_at: dt.datetime = _LONG_AGO
    handle: str | None = None  # set once it is pending

    @property
    def wants_mfa(self) -> bool:
        return ACR_MFA in self.acr_values

    def parameters(self) -> dict[str, str]:
        """Its parameters as stored while pending."""
        values = {
            "client_id": self.client.id,
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": " ".join(self.scopes),
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
            "state": self.state,
            "nonce": self.nonce,
            "prompt": " ".join(sorted(self.prompt)),
            "max_age": None if self.max_age is None else str(self.max_age),
            "login_hint": self.login_hint,
            "acr_values": " ".join(self.acr_values),
            "dpop_jkt": self.dpop_jkt,
            "_received_at": self.received_at.isoformat(),
        }
        return {name: value for name, value in values.items() if value}


@dataclass(frozen=True)
class SignIn:
    """The user must sign in (again) on the hosted sign-in page."""

    request: AuthorizationRequest


@dataclass(frozen=True)
class Consent:
    """The user must say yes or no on the consent page."""

    request: AuthorizationRequest


Outcome = SignIn | Consent | str  # a str: the URL to redirect to (code or error)


def error_url(error: RedirectError, issuer: str) -> str:
    """The redirect of an authorization error (RFC 6749 §4.1.2.1, RFC 9207 §2)."""
    values = {"error": error.error}
    if error.description:
        values["error_description"] = error.description
    return _with_query(error.target.redirect_uri, values, error.target.state, issuer)


def _with_query(uri: str, values: dict[str, str], state: str | None, issuer: str) -> str:
    if state is not None:
        values["state"] = state
    values["iss"] = issuer
    return uri + ("&" if "?" in uri else "?") + urlencode(values)


async def validate(
    tx: Transaction, oauth: OAuthService, params: Mapping[str, str], *, pending: bool = False
) -> AuthorizationRequest:
    """The request ``params`` make, checked; ``PageError`` or ``RedirectError`` otherwise.

    ``pending``: the parameters are a stored pending request, already
    expanded from any pushed request.
    """
    client_id = params.get("client_id")
    client = await get_client(tx, client_id) if client_id else None
    if client is None:
        raise PageError("The application that sent you here is not registered.")
    request_uri = params.get("request_uri")
    if request_uri is not None and not pending:
        # RFC 9126 §4: the pushed parameters replace the query; only client_id must agree.
        pushed = await take_pushed(tx, client.id, request_uri, now=oauth.clock.now())
        if pushed is None:
            raise PageError("This sign-in link has expired or was already used. Start again from the application.")
        params = {**pushed, "client_id": client.id}
    redirect_uri = params.get("redirect_uri")
    if redirect_uri is None or not redirect_uri_matches(client, redirect_uri):
        raise PageError("The application sent you here with an address it did not register.")
    target = AuthorizationRequest(client, redirect_uri, params.get("state"))
    if client.require_par and request_uri is None and not pending:
        raise RedirectError(target, "invalid_request", "This client must push its request (RFC 9126).")
    scopes, challenge, prompt = _checked(target, params)
    max_age_text = params.get("max_age")
    if max_age_text is not None and not (max_age_text.isascii() and max_age_text.isdigit() and len(max_age_text) < 10):
        raise RedirectError(target, "invalid_request", "The max_age parameter is not valid.")
    nonce, hint = params.get("nonce"), params.get("login_hint")
    if (nonce is not None and len(nonce) > _MAX_NONCE) or (hint is not None and len(hint) > _MAX_HINT):
        raise RedirectError(target, "invalid_request", "A parameter is too long.")
    return AuthorizationRequest(
        client,
        redirect_uri,
        target.state,
        scopes=tuple(scopes),
        code_challenge=challenge,
        nonce=nonce,
        prompt=prompt,
        max_age=None if max_age_text is None else int(max_age_text),
        login_hint=hint,
        acr_values=tuple(params.get("acr_values", "").split()),
        dpop_jkt=params.get("dpop_jkt"),
        received_at=_received_at(oauth, params) if pending else oauth.clock.now(),
    )


def _checked(target: AuthorizationRequest, params: Mapping[str, str]) -> tuple[list[str], str, frozenset[str]]:
    """The scopes, PKCE challenge and prompt of a request to a checked redirect URI."""
    client = target.client
    if params.get("request") is not None:
        # OpenID Core §6.1 / §3.1.2.6: the error that names what is not supported.
        raise RedirectError(target, "request_not_supported", "Request objects are not supported.")
    if params.get("response_mode", "query") != "query":
        raise RedirectError(target, "invalid_request", "Only response_mode=query is supported.")
    if params.get("response_type") != "code":
        raise RedirectError(target, "unsupported_response_type", "Only response_type=code is supported.")
    if "authorization_code" not in client.grant_types:
        raise RedirectError(target, "unauthorized_client", "This client may not use the authorization code grant.")
    challenge, method = params.get("code_challenge"), params.get("code_challenge_method")
    if method != "S256" or challenge is None or not _CHALLENGE.fullmatch(challenge):
        raise RedirectError(target, "invalid_request", "PKCE with code_challenge_method=S256 is required.")
    try:
        scopes = parse_scopes(params.get("scope"))
    except OAuthError:
        raise RedirectError(target, "invalid_scope", "The scope parameter is malformed.") from None
    if not scopes or any(scope not in client.scopes for scope in scopes):
        raise RedirectError(target, "invalid_scope", "A requested scope is not allowed for this client.")
    prompt = frozenset(params.get("prompt", "").split())
    if not prompt <= _PROMPTS or ("none" in prompt and len(prompt) > 1):
        raise RedirectError(target, "invalid_request", "The prompt parameter is not valid.")
    return scopes, challenge, prompt


def _received_at(oauth: OAuthService, params: Mapping[str, str]) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(params["_received_at"])
    except (KeyError, ValueError):
        return oauth.clock.now()


def _signed_in_enough(oauth: OAuthService, ask: AuthorizationRequest, browser: BrowserSessionRow, totp: bool) -> bool:
    """Whether the browser's sign-in satisfies ``prompt=login``, ``max_age`` and ``acr_values``."""
    fresh = browser.auth_time >= ask.received_at  # signed in during this very request
    if "login" in ask.prompt and not fresh:
        return False
    if ask.max_age is not None and not fresh and int(browser.auth_time.timestamp()) + ask.max_age < oauth.now():
        return False
    return not (ask.wants_mfa and totp and not browser.mfa)


async def decide(
    tx: Transaction,
    oauth: OAuthService,
    ask: AuthorizationRequest,
    browser: BrowserSessionRow | None,
    *,
    consented: bool = False,
) -> Outcome:
    """What to do with a valid request: sign in, ask for consent, or the redirect (code or error)."""
    if browser is not None:
        user = await oauth.identity.by_id(tx, browser.user_id)
        if user is None or user.disabled or not _signed_in_enough(oauth, ask, browser, user.totp_enabled):
            browser = None
    if browser is None:
        if "none" in ask.prompt:
            raise RedirectError(ask, "login_required")
        return SignIn(ask)
    if not consented and not ask.client.first_party:
        remembered = await tx.one(_CONSENT, {"user_id": browser.user_id, "client_id": ask.client.id})
        covered = remembered is not None and set(ask.scopes) <= set(remembered.scopes)
        if "consent" in ask.prompt or not covered:
            if "none" in ask.prompt:
                raise RedirectError(ask, "consent_required")
            return Consent(ask)
    return await issue_code(tx, oauth, ask, browser)


async def issue_code(
    tx: Transaction, oauth: OAuthService, ask: AuthorizationRequest, browser: BrowserSessionRow
) -> str:
    """Insert the code (RFC 6749 §4.1.2) and give the redirect that carries it with ``state`` and ``iss``."""
    now = oauth.clock.now()
    if (
        ask.handle is not None
        and await claim(tx, _TAKE_PENDING, {"uri_hash": _pending_hash(ask.handle), "now": now}) is None
    ):
        raise PageError("This sign-in has already been completed, or has expired. Start again from the application.")
    code = token_urlsafe(32)
    await tx.execute(
        _NEW_CODE,
        {
            "code_hash": hash_token(code),
            "client_id": ask.client.id,
            "user_id": browser.user_id,
            "session_id": browser.session_id,
            "redirect_uri": ask.redirect_uri,
            "scopes": list(ask.scopes),
            "code_challenge": ask.code_challenge,
            "nonce": ask.nonce,
            "auth_time": browser.auth_time,
            "amr": browser.amr,
            "acr": ACR_MFA if browser.mfa else ACR_PWD,
            "dpop_jkt": ask.dpop_jkt,
            "created_at": now,
            "expires_at": now + dt.timedelta(seconds=oauth.config.code_ttl),
        },
    )
    return _with_query(ask.redirect_uri, {"code": code}, ask.state, oauth.issuer)


async def deny(tx: Transaction, oauth: OAuthService, ask: AuthorizationRequest) -> str:
    """The user said no (RFC 6749 §4.1.2.1 ``access_denied``); the pending request is used up."""
    if ask.handle is not None:
        await claim(tx, _TAKE_PENDING, {"uri_hash": _pending_hash(ask.handle), "now": oauth.clock.now()})
    return error_url(RedirectError(ask, "access_denied", "The user refused."), oauth.issuer)


def _pending_hash(handle: str) -> str:
    return hash_token(_PENDING + handle)


async def save_pending(tx: Transaction, oauth: OAuthService, ask: AuthorizationRequest) -> AuthorizationRequest:
    """Keep ``ask`` server-side while the user signs in or consents; it, with its handle."""
    if ask.handle is not None:
        return ask
    handle, now = token_urlsafe(32), oauth.clock.now()
    await tx.execute(
        _NEW_PENDING,
        {
            "uri_hash": _pending_hash(handle),
            "client_id": ask.client.id,
            "parameters": ask.parameters(),
            "expires_at": now + dt.timedelta(seconds=PENDING_TTL),
        },
    )
    return AuthorizationRequest(**{**ask.__dict__, "handle": handle})


async def load_pending(tx: Transaction, oauth: OAuthService, handle: str | None) -> AuthorizationRequest | None:
    """The pending request ``handle`` names, checked again (its client may have changed), or None."""
    if not handle or len(handle) > 64:
        return None
    row = await tx.one(_PENDING_ROW, {"uri_hash": _pending_hash(handle), "now": oauth.clock.now()})
    if row is None:
        return None
    ask = await validate(tx, oauth, dict(row.parameters), pending=True)
    return AuthorizationRequest(**{**ask.__dict__, "handle": handle})


async def user_has_consented(db: Queries, user_id: uuid.UUID, client_id: str, scopes: tuple[str, ...]) -> bool:
    remembered = await db.one(_CONSENT, {"user_id": user_id, "client_id": client_id})
    return remembered is not None and set(scopes) <= set(remembered.scopes)
