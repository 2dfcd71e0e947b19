"""Sign in with other providers, and the identities linked to an account.

The flow (RFC 6749 §4.1 with PKCE S256, RFC 7636; OpenID Connect Core §3.1;
RFC 9700 §4.7 CSRF and §4.4 mix-up defences; RFC 9207 ``iss``):

1. ``GET /api/v1/auth/providers/{name}/start`` makes a ``ProviderFlow``:
   random ``state`` (stored hashed), ``nonce`` and PKCE verifier, and a
   random browser secret stored hashed and set as a ``__Host-`` cookie
   (Secure, HttpOnly, SameSite=Lax, Path=/). It redirects to the provider.
2. ``GET …/callback`` claims the flow of ``state`` only together with the
   cookie of the browser that started it (a ``state`` alone, forged or
   leaked, does nothing: login CSRF), once; checks the provider's ``iss``;
   exchanges the code with the verifier; verifies the ID token (signature
   against the provider's JWKS, ``iss``, ``aud``/``azp``, ``exp``/``iat``,
   ``nonce``). The user is the ``LinkedIdentity`` of (``iss``, ``sub``).
   An unknown identity becomes a new account only when the provider verified
   its address and no account has that address: an address match never links
   (a pre-registered account, or one registered later by someone else, is
   not taken over). Linking is done from a signed-in session only.
3. The callback page carries a one-time exchange code in its body (never a
   token, and nothing in a URL): ``POST /api/v1/auth/providers/exchange``
   spends it once, within ``EXCHANGE_TTL``, for the usual token pair (or the
   TOTP step when the account has a second factor, as ``/auth/login`` does).

With ``mode=hosted`` (the "Sign in with <name>" buttons of the hosted
sign-in page, ``…/start?mode=hosted&request=H``) the flow keeps the handle
of the pending authorization request (``resume``) and the callback ends in
the hosted pages instead: after the same checks it answers 303 to
``/oauth2/sign-in/provider`` with the one-time code in the flow's
``__Host-`` cookie (not in the URL), and that page (``bastion.pages.oauth``)
spends it once (``take_hosted_sign_in``). It signs in exactly as the
password form does: for an account with TOTP, the ``#second-factor`` form
and ``/oauth2/sign-in/mfa`` (a provider sign-in never skips the second
factor); then the browser session (``bastion.oauth.browser``) and the
pending request, resumed where a password sign-in resumes it.

The session's ``amr`` (RFC 8176 §2) is ``["fed"]``: RFC 8176 registers no
value for "signed in at another identity provider", and ``fed`` is the one
in use for it (Microsoft Entra ID's ``amr`` claim); the provider's own
methods are not known here, so nothing stronger is claimed. Its ``acr`` is
therefore the single-factor ``urn:bastion:pwd``, never ``urn:bastion:mfa``.
After the second factor the ``amr`` is ``["fed", "otp"]`` (and the ``acr``
``urn:bastion:mfa``), as a password and a TOTP code give ``["pwd", "otp"]``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field
from sqlalchemy import bindparam, delete, func, insert, select, update

from bastion.access import Permission, Principal, public, require
from bastion.audit import EventTag, Outcome, record_event
from bastion.db.claims import claim, compare_and_set
from bastion.db.database import Queries
from bastion.http.problems import Conflict, Forbidden, NotFound, Problem
from bastion.http.throttle import Throttle
from bastion.identity import schemas
from bastion.identity.errors import InvalidEmail, LoginFailed
from bastion.identity.service import IdentityService
from bastion.identity.throttle import LOGIN_BY_ACCOUNT, LOGIN_BY_ADDRESS, account_key
from bastion.oauth.models import LinkedIdentity, ProviderFlow
from bastion.oauth.providers import (
    ProviderError,
    ProviderIdentity,
    ProviderRegistry,
    Refused,
    UpstreamProvider,
)
from bastion.oauth.service import OAuthService
from bastion.security import hash_token, token_urlsafe
from bastion.sessions.service import SessionService
from bastion.uow import UnitOfWork, unit_of_work

if TYPE_CHECKING:
    import jinja2

__all__ = [
    "AMR_FEDERATED",
    "BROWSER_COOKIE",
    "EXCHANGE_TTL",
    "FLOW_TTL",
    "HOSTED_LANDING",
    "HostedSignIn",
    "end_provider_flow",
    "registry",
    "router",
    "signed_in_with_provider",
    "take_hosted_sign_in",
]

router = APIRouter(prefix="/api/v1", tags=["identity"])

BROWSER_COOKIE = "__Host-bastion-provider"
FLOW_TTL = 600  # the user has ten minutes at the provider
EXCHANGE_TTL = 60  # the exchange code is spent by the app at once
_PENDING = "-"  # browser_hash of a link flow no browser has started yet (no hash is "-")
AMR_FEDERATED = "fed"  # the session's amr (module docstring): signed in at another provider
HOSTED_LANDING = "/oauth2/sign-in/provider"  # the hosted page a mode=hosted callback ends at

START_BY_ADDRESS = Throttle("provider-start", lambda s: s.oauth.provider_rate_per_ip)
CALLBACK_BY_ADDRESS = Throttle("provider-callback", lambda s: s.oauth.provider_rate_per_ip)
EXCHANGE_BY_ADDRESS = Throttle("provider-exchange", lambda s: s.oauth.provider_rate_per_ip)

Reader = Annotated[Principal, Depends(require(Permission.ME_READ))]
# Adding or removing a way to sign in is credential management, like the password.
CredentialOwner = Annotated[Principal, Depends(require(Permission.ME_PASSWORD))]

_NEW_FLOW = insert(ProviderFlow)
_BIND_LINK_FLOW = compare_and_set(
    ProviderFlow,
    ProviderFlow.state_hash == bindparam("state_hash"),
    ProviderFlow.provider == bindparam("provider"),
    ProviderFlow.browser_hash == _PENDING,
    ProviderFlow.link_user_id.is_not(None),
    ProviderFlow.used_at.is_(None),
    ProviderFlow.expires_at > bindparam("now"),
    values={ProviderFlow.browser_hash: bindparam("browser_hash")},
    returning=[ProviderFlow.nonce, ProviderFlow.code_verifier],
)
_CLAIM_FLOW = compare_and_set(
    ProviderFlow,
    ProviderFlow.state_hash == bindparam("state_hash"),
    ProviderFlow.provider == bindparam("provider"),
    ProviderFlow.browser_hash == bindparam("browser_hash"),
    ProviderFlow.used_at.is_(None),
    ProviderFlow.expires_at > bindparam("now"),
    values={ProviderFlow.used_at: bindparam("now")},
    returning=[ProviderFlow.nonce, ProviderFlow.code_verifier, ProviderFlow.mode, ProviderFlow.link_user_id],
)
_SET_EXCHANGE = (
    update(ProviderFlow)
    .where(ProviderFlow.state_hash == bindparam("state_hash"))
    .values(user_id=bindparam("user_id"), exchange_hash=bindparam("exchange_hash"), expires_at=bindparam("expires"))
)
_CLAIM_EXCHANGE = compare_and_set(
    ProviderFlow,
    ProviderFlow.exchange_hash == bindparam("exchange_hash"),
    ProviderFlow.mode == "api",  # a hosted sign-in's code is spent by the hosted pages only
    ProviderFlow.exchanged_at.is_(None),
    ProviderFlow.expires_at > bindparam("now"),
    values={ProviderFlow.exchanged_at: bindparam("now")},
    returning=[ProviderFlow.user_id],
)
_CLAIM_HOSTED = compare_and_set(
    ProviderFlow,
    ProviderFlow.exchange_hash == bindparam("exchange_hash"),
    ProviderFlow.mode == "hosted",
    ProviderFlow.exchanged_at.is_(None),
    ProviderFlow.expires_at > bindparam("now"),
    # It stays readable (not spendable) while the user types the second factor: signed_in_with_provider.
    values={ProviderFlow.exchanged_at: bindparam("now"), ProviderFlow.expires_at: bindparam("until")},
    returning=[ProviderFlow.user_id, ProviderFlow.resume],
)
_SPENT_HOSTED = select(ProviderFlow.user_id).where(
    ProviderFlow.exchange_hash == bindparam("exchange_hash"),
    ProviderFlow.mode == "hosted",
    ProviderFlow.exchanged_at.is_not(None),
    ProviderFlow.expires_at > bindparam("now"),
)
_IDENTITY = select(LinkedIdentity).where(
    LinkedIdentity.issuer == bindparam("issuer"), LinkedIdentity.subject == bindparam("subject")
)
_NEW_IDENTITY = insert(LinkedIdentity)
_TOUCH_IDENTITY = (
    update(LinkedIdentity)
    .where(LinkedIdentity.id == bindparam("identity_id"))
    .values(last_used_at=bindparam("now"), email=bindparam("email"))
)
_IDENTITIES_OF = (
    select(LinkedIdentity).where(LinkedIdentity.user_id == bindparam("user_id")).order_by(LinkedIdentity.created_at)
)
_COUNT_IDENTITIES = select(func.count()).where(LinkedIdentity.user_id == bindparam("user_id"))
_DELETE_IDENTITY = delete(LinkedIdentity).where(
    LinkedIdentity.id == bindparam("identity_id"), LinkedIdentity.user_id == bindparam("user_id")
)


class AccountNotCreated(Forbidden):
    detail = (
        "This provider sign-in matches no account and cannot create one. If you already have an account, "
        "sign in to it and link this provider from your account."
    )


class LastSignIn(Conflict):
    detail = "This is the account's only way to sign in. Set a password (reset it by mail) before unlinking it."


class ProviderName(BaseModel):
    name: str


class ProviderList(BaseModel):
    providers: list[ProviderName]


class ExchangeBody(BaseModel):
    code: str = Field(min_length=1, max_length=128)


class LinkBody(BaseModel):
    # The current password, when the account has one (a re-authentication).
    password: str | None = Field(default=None, max_length=1024)


class LinkStart(BaseModel):
    url: str = Field(description="Open this URL in the user's browser to sign in at the provider and link it.")


class Identity(BaseModel):
    id: uuid.UUID
    provider: str
    issuer: str
    email: str | None
    created_at: dt.datetime
    last_used_at: dt.datetime | None


class IdentityList(BaseModel):
    identities: list[Identity]


def _oauth(request: Request) -> OAuthService:
    service: OAuthService = request.app.state.oauth
    return service


def registry(request: Request) -> ProviderRegistry:
    """The providers of the app's settings, read once (client secrets from their files)."""
    found: ProviderRegistry | None = getattr(request.app.state, "providers", None)
    if found is None:
        found = request.app.state.providers = ProviderRegistry(request.app.state.settings)
    return found


def _provider(request: Request, name: str) -> UpstreamProvider:
    provider = registry(request).get(name)
    if provider is None:
        raise NotFound("No such provider.")
    return provider


def _callback_url(oauth: OAuthService, name: str) -> str:
    return oauth.url(f"/api/v1/auth/providers/{name}/callback")


def _refuse(uow: UnitOfWork, oauth: OAuthService, provider: str, reason: str, **ids: uuid.UUID | None) -> None:
    """The audit event of a refused provider sign-in; ``reason`` names the failed check (never a value)."""
    record_event(
        uow.db,
        oauth.clock,
        EventTag.OAUTH_PROVIDER_SIGN_IN,
        origin=uow.origin,
        outcome=Outcome.DENIED,
        subject_id=ids.get("subject_id"),
        details={"provider": provider, "reason": reason},
    )


def _set_browser_cookie(response: Response, value: str) -> None:
    response.set_cookie(BROWSER_COOKIE, value, max_age=FLOW_TTL, path="/", secure=True, httponly=True, samesite="lax")


@router.get("/auth/providers", dependencies=[Depends(public)])
async def list_providers(request: Request) -> ProviderList:
    """The providers users may sign in with."""
    return ProviderList(providers=[ProviderName(name=name) for name in registry(request).names()])


@router.get(
    "/auth/providers/{name}/start",
    status_code=302,
    dependencies=[Depends(public), Depends(START_BY_ADDRESS)],
    responses={302: {"description": "To the provider"}, 404: {"description": "No such provider"}},
)
async def start(
    name: str,
    request: Request,
    mode: Literal["api", "hosted"] = "api",
    link: Annotated[str | None, Query(max_length=128)] = None,
    resume: Annotated[str | None, Query(alias="request", max_length=128)] = None,
) -> Response:
    """Redirect the browser to the provider (RFC 6749 §4.1.1) with ``state``, ``nonce`` and PKCE S256.

    ``request`` (``mode=hosted`` only) is the pending authorization request
    the hosted sign-in page was showing: the sign-in goes back to it.
    """
    provider, oauth = _provider(request, name), _oauth(request)
    await provider.metadata()  # discovery first: a provider that cannot be reached leaves no flow behind
    browser, now = token_urlsafe(32), oauth.clock.now()
    async with unit_of_work(request) as uow:
        if link is not None:
            # A link flow made by POST /me/identities/{provider}/link: the first browser to open it owns it.
            state = link
            bound = await claim(
                uow.db,
                _BIND_LINK_FLOW,
                {"state_hash": hash_token(state), "provider": name, "browser_hash": hash_token(browser), "now": now},
            )
            if bound is None:
                raise ProviderError
            nonce, verifier = bound.nonce, bound.code_verifier
        else:
            state, nonce, verifier = token_urlsafe(32), token_urlsafe(32), token_urlsafe(48)
            await uow.db.execute(
                _NEW_FLOW,
                _flow_row(
                    name,
                    state=state,
                    browser_hash=hash_token(browser),
                    nonce=nonce,
                    verifier=verifier,
                    mode=mode,
                    link_user_id=None,
                    now=now,
                    resume=resume if mode == "hosted" else None,
                ),
            )
        url = await provider.authorization_url(
            redirect_uri=_callback_url(oauth, name), state=state, nonce=nonce, code_verifier=verifier
        )
    response = RedirectResponse(url, status_code=302, headers={"cache-control": "no-store"})
    _set_browser_cookie(response, browser)
    return response


def _flow_row(
    name: str,
    *,
    state: str,
    browser_hash: str,
    nonce: str,
    verifier: str,
    mode: str,
    link_user_id: uuid.UUID | None,
    now: dt.datetime,
    resume: str | None = None,
) -> dict[str, Any]:
    return {
        "state_hash": hash_token(state),
        "provider": name,
        "browser_hash": browser_hash,
        "nonce": nonce,
        "code_verifier": verifier,
        "mode": mode,
        "link_user_id": link_user_id,
        "resume": resume,
        "created_at": now,
        "expires_at": now + dt.timedelta(seconds=FLOW_TTL),
    }


_CALLBACK_PARAMETERS = frozenset({"state", "code", "iss", "error", "error_description", "error_uri", "session_state"})


def _callback_params(request: Request) -> dict[str, str]:
    """The callback's parameters; a repeated one, or an oversized one, is refused (RFC 6749 §3.1)."""
    found: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key not in _CALLBACK_PARAMETERS:
            continue
        if key in found or len(value) > 4096:
            raise ProviderError
        found[key] = value
    return found


@router.get(
    "/auth/providers/{name}/callback",
    dependencies=[Depends(public), Depends(CALLBACK_BY_ADDRESS)],
    response_class=HTMLResponse,
    responses={400: {"description": "Refused"}, 403: {"description": "No account"}},
)
async def callback(name: str, request: Request) -> Response:
    """The provider's authorization response (RFC 6749 §4.1.2, RFC 9207 §2.4, OpenID Core §3.1.2.5).

    A refusal is problem+json, except after the flow is known to be a
    ``mode=hosted`` one: a person is reading, so the same words on a page.
    """
    seen = _Seen()
    try:
        return await _callback(name, request, seen)
    except Problem as problem:
        if seen.mode != "hosted":
            raise
        return _ended(_page("Sign-in not completed", problem.detail or problem.title, status=problem.status))


@dataclass
class _Seen:
    """What the callback has learnt of its flow so far (its mode is known once the flow is claimed)."""

    mode: str | None = None


async def _callback(name: str, request: Request, seen: _Seen) -> Response:
    provider, oauth = _provider(request, name), _oauth(request)
    params = _callback_params(request)
    cookie = request.cookies.get(BROWSER_COOKIE)
    async with unit_of_work(request) as uow:
        state = params.get("state")
        if state is None or not cookie:
            _refuse(uow, oauth, name, "state" if state is None else "browser")
            raise ProviderError
        now = oauth.clock.now()
        flow = await claim(
            uow.db,
            _CLAIM_FLOW,
            {"state_hash": hash_token(state), "provider": name, "browser_hash": hash_token(cookie), "now": now},
        )
        if flow is None:
            # Unknown, spent, expired, another provider's, or started by another browser: one answer.
            _refuse(uow, oauth, name, "state")
            raise ProviderError
        seen.mode = flow.mode
        metadata = await provider.metadata()
        if not provider.check_response_issuer(metadata, params.get("iss")):
            _refuse(uow, oauth, name, "iss")  # RFC 9207: a response from another provider (mix-up)
            raise ProviderError
        if "error" in params or "code" not in params:
            _refuse(uow, oauth, name, "provider_error")
            raise ProviderError
    # The flow is spent and committed: the provider's round trips (token, JWKS, userinfo; seconds when it is
    # slow) run outside any transaction, so a slow provider never holds a database write lock.
    try:
        who = await provider.identity(
            code=params["code"],
            redirect_uri=_callback_url(oauth, name),
            code_verifier=flow.code_verifier,
            nonce=flow.nonce,
            now=oauth.now(),
        )
    except Refused as refused:
        async with unit_of_work(request) as uow:
            _refuse(uow, oauth, name, refused.check)
        raise ProviderError from None
    async with unit_of_work(request) as uow:
        if flow.link_user_id is not None:
            await _link(uow, oauth, name, who, flow.link_user_id)
            return _ended(_page("Linked", "The provider is now linked to your account. You may close this window."))
        user_id = await _sign_in_user(uow, oauth, name, who)
        code = token_urlsafe(32)
        await uow.db.execute(
            _SET_EXCHANGE,
            {
                "state_hash": hash_token(state),
                "user_id": user_id,
                "exchange_hash": hash_token(code),
                "expires": oauth.clock.now() + dt.timedelta(seconds=EXCHANGE_TTL),
            },
        )
    if flow.mode == "hosted":
        # On to the hosted pages, the code in this flow's cookie (never in a URL): take_hosted_sign_in. The
        # cookie outlives the code's minute so the second-factor step can read the spent flow back for its amr.
        landing = RedirectResponse(HOSTED_LANDING, status_code=303, headers={"cache-control": "no-store"})
        _set_browser_cookie(landing, code)
        return landing
    return _ended(_page("Signed in", "Return to the application; it completes the sign-in with this code.", code=code))


def _ended(response: HTMLResponse) -> HTMLResponse:
    """The flow is over: its browser cookie goes too."""
    end_provider_flow(response)
    return response


def end_provider_flow(response: Response) -> None:
    """Delete the provider flow's cookie (the flow is over)."""
    response.delete_cookie(BROWSER_COOKIE, path="/", secure=True, httponly=True, samesite="lax")


@dataclass(frozen=True)
class HostedSignIn:
    """A ``mode=hosted`` provider sign-in the callback accepted: whom, and the pending request to resume."""

    user_id: uuid.UUID
    resume: str | None


def _flow_cookie(request: Request) -> str | None:
    value = request.cookies.get(BROWSER_COOKIE)
    return value if value and len(value) <= 128 else None


async def take_hosted_sign_in(request: Request, uow: UnitOfWork, oauth: OAuthService) -> HostedSignIn | None:
    """Spend the code a ``mode=hosted`` callback left in this browser's flow cookie, once.

    None for no cookie, or a code that is unknown, an API flow's, spent or
    expired. It can then be read back by ``signed_in_with_provider`` for
    as long as a second-factor step lives.
    """
    code = _flow_cookie(request)
    if code is None:
        return None
    now = oauth.clock.now()
    until = now + dt.timedelta(seconds=oauth.settings.auth.mfa_token_ttl)
    found = await claim(uow.db, _CLAIM_HOSTED, {"exchange_hash": hash_token(code), "now": now, "until": until})
    if found is None or found.user_id is None:
        return None
    return HostedSignIn(found.user_id, found.resume)


async def signed_in_with_provider(request: Request, db: Queries, oauth: OAuthService, user_id: uuid.UUID) -> bool:
    """Whether this browser's first factor for ``user_id`` was a hosted provider sign-in (its ``amr``)."""
    code = _flow_cookie(request)
    if code is None:
        return False
    found = await db.one(_SPENT_HOSTED, {"exchange_hash": hash_token(code), "now": oauth.clock.now()})
    return found is not None and found.user_id == user_id


async def _sign_in_user(uow: UnitOfWork, oauth: OAuthService, name: str, who: ProviderIdentity) -> uuid.UUID:
    """The account of (``iss``, ``sub``); a new one only for a verified address no account has."""
    now = oauth.clock.now()
    identity: IdentityService = oauth.identity
    linked = await uow.db.one(_IDENTITY, {"issuer": who.issuer, "subject": who.subject})
    if linked is not None:
        user = await identity.by_id(uow.db, linked.user_id)
        if user is None or user.disabled:
            _refuse(uow, oauth, name, "disabled", subject_id=linked.user_id)
            raise ProviderError
        await uow.db.execute(_TOUCH_IDENTITY, {"identity_id": linked.id, "now": now, "email": who.email})
        record_event(
            uow.db, oauth.clock, EventTag.OAUTH_PROVIDER_SIGN_IN, origin=uow.origin, actor_id=user.id,
            details={"provider": name, "new_account": False},
        )  # fmt: skip
        return user.id
    if who.email is None or not who.email_verified:
        _refuse(uow, oauth, name, "unverified_email")
        raise AccountNotCreated
    if oauth.settings.auth.registration != "open":
        _refuse(uow, oauth, name, "registration_closed")
        raise AccountNotCreated
    existing = await identity.by_email(uow.db, who.email)
    if existing is not None:
        # Never linked by address: the owner signs in and links from the account (no pre-account takeover).
        _refuse(uow, oauth, name, "email_taken", subject_id=existing.id)
        raise AccountNotCreated
    try:
        user = await identity.create_user(uow, who.email, None, verified=True)
    except (ValueError, InvalidEmail):
        _refuse(uow, oauth, name, "email_taken")
        raise AccountNotCreated from None
    await _insert_identity(uow, name, who, user.id, now)
    record_event(
        uow.db, oauth.clock, EventTag.OAUTH_PROVIDER_SIGN_IN, origin=uow.origin, actor_id=user.id,
        details={"provider": name, "new_account": True},
    )  # fmt: skip
    return user.id


async def _link(uow: UnitOfWork, oauth: OAuthService, name: str, who: ProviderIdentity, user_id: uuid.UUID) -> None:
    linked = await uow.db.one(_IDENTITY, {"issuer": who.issuer, "subject": who.subject})
    if linked is not None and linked.user_id != user_id:
        record_event(
            uow.db, oauth.clock, EventTag.OAUTH_IDENTITY_LINK, origin=uow.origin, outcome=Outcome.DENIED,
            actor_id=user_id, details={"provider": name, "reason": "linked_to_another_account"},
        )  # fmt: skip
        raise ProviderError("This provider account is already linked to another account.")
    if linked is None:
        await _insert_identity(uow, name, who, user_id, oauth.clock.now())
    record_event(
        uow.db, oauth.clock, EventTag.OAUTH_IDENTITY_LINK, origin=uow.origin, actor_id=user_id,
        details={"provider": name},
    )  # fmt: skip


async def _insert_identity(
    uow: UnitOfWork, name: str, who: ProviderIdentity, user_id: uuid.UUID, now: dt.datetime
) -> None:
    await uow.db.execute(
        _NEW_IDENTITY,
        {
            "id": uuid.uuid4(),
            "user_id": user_id,
            "provider": name,
            "issuer": who.issuer,
            "subject": who.subject,
            "email": who.email,
            "created_at": now,
            "last_used_at": now,
        },
    )


_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title><link rel="stylesheet" href="/pages/assets/pages.css"></head>
<body><main><h1>{{ title }}</h1><p>{{ message }}</p>
{% if code %}<p>Code: <output id="exchange-code" data-code="{{ code }}">{{ code }}</output></p>{% endif %}
</main></body>
</html>
"""


@cache
def _template() -> jinja2.Template:
    import jinja2

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(_PAGE)


def _page(title: str, message: str, *, code: str | None = None, status: int = 200) -> HTMLResponse:
    """The callback's last page: the exchange code in its body, never in a URL, never cached."""
    return HTMLResponse(
        _template().render(title=title, message=message, code=code),
        status_code=status,
        headers={"cache-control": "no-store", "referrer-policy": "no-referrer"},
    )


@router.post(
    "/auth/providers/exchange",
    dependencies=[Depends(public), Depends(EXCHANGE_BY_ADDRESS)],
    responses={400: {"description": "Unknown, spent or expired code"}, 429: {"description": "Rate limited"}},
)
async def exchange(body: ExchangeBody, request: Request) -> schemas.Tokens | schemas.MfaChallenge:
    """Spend the callback's one-time code for a session, once (or for the TOTP step, as ``/auth/login``)."""
    oauth = _oauth(request)
    sessions: SessionService = oauth.sessions
    async with unit_of_work(request) as uow:
        found = await claim(uow.db, _CLAIM_EXCHANGE, {"exchange_hash": hash_token(body.code), "now": oauth.clock.now()})
        if found is None or found.user_id is None:
            raise ProviderError
        user = await oauth.identity.by_id(uow.db, found.user_id)
        if user is None or user.disabled:
            raise ProviderError
        if user.totp_enabled:
            return schemas.MfaChallenge(
                mfa_token=await oauth.identity.start_mfa(uow, user), methods=["totp", "recovery_code"]
            )
        pair = await sessions.open(uow, user.id, mfa=False, user_agent=uow.origin.user_agent or "")
    return schemas.Tokens(access_token=pair.access_token, expires_in=pair.expires_in, refresh_token=pair.refresh_token)


# --- linked identities ----------------------------------------------------


@router.get("/me/identities")
async def list_identities(caller: Reader, request: Request) -> IdentityList:
    """The provider accounts linked to the caller's account."""
    rows = await request.app.state.db.all(_IDENTITIES_OF, {"user_id": caller.user_id})
    return IdentityList(
        identities=[
            Identity(
                id=row.id,
                provider=row.provider,
                issuer=row.issuer,
                email=row.email,
                created_at=row.created_at,
                last_used_at=row.last_used_at,
            )
            for row in rows
        ]
    )


@router.post(
    "/me/identities/{name}/link",
    dependencies=[Depends(LOGIN_BY_ADDRESS)],
    responses={401: {"description": "Wrong password"}, 403: {"description": "Not from a session"}},
)
async def link(name: str, body: LinkBody, caller: CredentialOwner, request: Request) -> LinkStart:
    """Start linking a provider account to the caller's: open the returned URL in the same user's browser.

    A linked provider is a new way into the account, so it is added as the
    password is changed: from a signed-in session (never with an API key),
    with the current password (a re-authentication, throttled and counted
    towards the lockout like sign-in) when the account has one. The URL is
    single-use: the first browser to open it owns the flow.
    """
    _provider(request, name)
    if caller.session_id is None:
        raise Forbidden("Link a provider from a signed-in session, not with an API key.")
    oauth = _oauth(request)
    state = token_urlsafe(32)
    async with unit_of_work(request) as uow:
        user = await oauth.identity.by_id(uow.db, caller.account_id)
        if user is None or user.disabled:
            raise LoginFailed
        if user.password_hash is not None:
            await LOGIN_BY_ACCOUNT.hit(request, account_key(user.email))
            if body.password is None or not await oauth.identity.reauthenticate(uow, user, body.password):
                raise LoginFailed("The password is incorrect.")
        await uow.db.execute(
            _NEW_FLOW,
            _flow_row(
                name,
                state=state,
                browser_hash=_PENDING,
                nonce=token_urlsafe(32),
                verifier=token_urlsafe(48),
                mode="api",
                link_user_id=caller.user_id,
                now=oauth.clock.now(),
            ),
        )
    return LinkStart(url=oauth.url(f"/api/v1/auth/providers/{name}/start?mode=api&link={state}"))


@router.delete("/me/identities/{identity_id}", status_code=204, responses={409: {"description": "Last sign-in"}})
async def unlink(identity_id: uuid.UUID, caller: CredentialOwner, request: Request) -> Response:
    """Unlink one of the caller's identities; not the last way into an account that has no password."""
    oauth = _oauth(request)
    async with unit_of_work(request) as uow:
        user = await oauth.identity.by_id(uow.db, caller.account_id)
        mine = [row for row in await uow.db.all(_IDENTITIES_OF, {"user_id": caller.user_id}) if row.id == identity_id]
        if user is None or not mine:
            raise NotFound("No such linked identity.")
        count = await uow.db.value(_COUNT_IDENTITIES, {"user_id": caller.user_id})
        if user.password_hash is None and count <= 1:
            raise LastSignIn
        await uow.db.execute(_DELETE_IDENTITY, {"identity_id": identity_id, "user_id": caller.user_id})
        record_event(
            uow.db, oauth.clock, EventTag.OAUTH_IDENTITY_UNLINK, origin=uow.origin, actor_id=caller.user_id,
            details={"provider": mine[0].provider},
        )  # fmt: skip
    return Response(status_code=204)
