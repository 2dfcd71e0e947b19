"""The browser side of OAuth: ``/oauth2/authorize`` and the hosted sign-in, consent, logout and device pages.

The protocol is decided in ``bastion.oauth`` (``authorize``, ``browser``,
``consent``, ``logout``, ``device``); these handlers read the request,
call it and render what it decided, as HTML forms that post to this origin
with no script at all. Every form carries the CSRF token of
``bastion.oauth.browser``, and a post without the right one is refused
before anything else happens.

Sign-in is the API's sign-in: ``IdentityService.authenticate``, then, for an
account with TOTP, ``start_mfa`` / ``complete_mfa`` on a second page; the
same throttles (``LOGIN_BY_ADDRESS`` and ``LOGIN_BY_ACCOUNT``,
``MFA_BY_ADDRESS``), the same lockout, the same audit events, and one
generic message for every failure.

Pages (what the rp tests and docs use):

- ``GET|POST /oauth2/authorize`` (RFC 6749 §4.1.1): a redirect (302 from
  GET, 303 from POST) to ``/oauth2/sign-in?request=H``,
  ``/oauth2/consent?request=H``, or the client with ``code``, ``state``,
  ``iss``; or an error page (400) when the client or redirect URI is not
  registered.
- ``GET /oauth2/sign-in?request=H`` → form ``#sign-in`` posting
  ``csrf_token, request, email, password`` to ``/oauth2/sign-in``.
- ``#providers``: one link "Sign in with <name>" per configured provider,
  to ``/api/v1/auth/providers/<name>/start?mode=hosted&request=H``; the
  provider's callback comes back to ``GET /oauth2/sign-in/provider``, which
  signs in as the password form does (``bastion.oauth.federation``).
- With TOTP: form ``#second-factor`` posting ``csrf_token, mfa_token,
  request, code`` (or ``recovery_code``) to ``/oauth2/sign-in/mfa``.
- ``GET /oauth2/consent?request=H`` → form ``#consent`` posting
  ``csrf_token, request, decision=allow|deny`` to ``/oauth2/consent``.
- A finished sign-in or consent answers 303 to the next step or to the client.
- ``GET|POST /oauth2/logout`` → form ``#logout`` posting to ``/oauth2/logout/confirm``.
- ``GET /oauth2/device/verify[?user_code=C]`` → form ``#device``, then
  ``#device-decision`` posting ``csrf_token, user_code, decision`` to
  ``/oauth2/device/decision``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.responses import Response

from bastion.access import public
from bastion.http.middleware import allow_form_action
from bastion.http.problems import Problem, TooManyRequests
from bastion.http.throttle import Throttle
from bastion.identity.errors import EmailNotVerified, InvalidMfa, LoginFailed, PasswordResetRequired
from bastion.identity.service import SecondFactor
from bastion.identity.throttle import LOGIN_BY_ACCOUNT, LOGIN_BY_ADDRESS, MFA_BY_ADDRESS, account_key, sign_in_address
from bastion.oauth import authorize, consent, device, logout
from bastion.oauth.authorize import AuthorizationRequest, Consent, PageError, RedirectError, SignIn
from bastion.oauth.browser import (
    BrowserSessionRow,
    CsrfRefused,
    browser_session_of,
    check_csrf,
    clear_browser_cookie,
    csrf_token,
    current_browser_session,
    end_browser_session,
    open_browser_session,
    set_browser_cookie,
    set_csrf_cookie,
)
from bastion.oauth.consent import describe_scope
from bastion.oauth.errors import OAuthError
from bastion.oauth.federation import (
    AMR_FEDERATED,
    HOSTED_LANDING,
    end_provider_flow,
    registry,
    signed_in_with_provider,
    take_hosted_sign_in,
)
from bastion.oauth.forms import Params, read_form, read_query
from bastion.oauth.rfc8628 import display_user_code, normalise_user_code
from bastion.oauth.service import OAuthService
from bastion.pages.routes import ASSETS, templates
from bastion.uow import UnitOfWork, unit_of_work

router = APIRouter(include_in_schema=False, dependencies=[Depends(public)])

# The pages that look a pending request up: as many as authorizations, counted apart.
PAGES_BY_ADDRESS = Throttle("oauth:pages:ip", lambda s: s.oauth.authorize_rate_per_ip)
# A short user code is guessed like a second factor: the same budget.
DEVICE_BY_ADDRESS = Throttle("oauth:device:verify:ip", lambda s: s.auth.mfa_rate_per_ip)
_NEXT = re.compile(r"/oauth2/device/verify(\?user_code=[A-Za-z0-9-]{1,16})?")
SIGNED_IN_FAILED = "The email address or password is incorrect, or the account cannot sign in now."
MFA_FAILED = "That code is not right, or this sign-in has expired. Try again, or start over."


def _oauth(request: Request) -> OAuthService:
    service: OAuthService = request.app.state.oauth
    return service


def _render(
    request: Request,
    template: str,
    title: str,
    *,
    status: int = 200,
    ask: AuthorizationRequest | None = None,
    **values: Any,
) -> HTMLResponse:
    if ask is not None:
        # Chromium applies form-action to the redirect a post ends in: name the client's origin.
        allow_form_action(request.scope, _origin(ask.redirect_uri))
        values.setdefault("client_name", ask.client.name)
        values.setdefault("handle", ask.handle)
    values.setdefault("client_name", None)
    values.setdefault("error", None)
    values.setdefault("handle", None)
    values.setdefault("next", None)
    values.setdefault("providers", registry(request).names())
    service = request.app.state.settings.auth.service_name
    csrf = csrf_token(request)
    html = templates().get_template(template).render(title=title, service=service, assets=ASSETS, csrf=csrf, **values)
    response = HTMLResponse(html, status_code=status)
    set_csrf_cookie(request, response)
    return response


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.netloc:
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    return f"{parts.scheme}:"


def error_page(request: Request, message: str, *, status: int = 400) -> HTMLResponse:
    """The error page: a message for the user, never a redirect (RFC 6749 §4.1.2.1)."""
    return _render(request, "message.html", "Something went wrong", status=status, message=message, alert=True)


def _message(request: Request, title: str, message: str) -> HTMLResponse:
    return _render(request, "message.html", title, message=message, alert=False)


def _redirect(url: str, status: int = 303) -> RedirectResponse:
    return RedirectResponse(url, status_code=status)


async def _params(request: Request) -> Params:
    return read_query(request) if request.method == "GET" else await read_form(request)


async def _form(request: Request) -> Params:
    """A hosted form's fields, after its CSRF check; ``CsrfRefused`` or ``OAuthError`` otherwise."""
    form = await read_form(request)
    check_csrf(request, form, _oauth(request).issuer)
    return form


def _refused(request: Request, exc: Exception) -> HTMLResponse:
    if isinstance(exc, CsrfRefused):
        return error_page(
            request, "This form has expired or did not come from this site. Go back and try again.", status=403
        )
    return error_page(request, "The request was not valid.")


# --- /oauth2/authorize ------------------------------------------------------


@router.api_route("/oauth2/authorize", methods=["GET", "POST"], dependencies=[Depends(authorize.AUTHORIZE_BY_ADDRESS)])
async def authorization_endpoint(request: Request) -> Response:
    """RFC 6749 §4.1.1 (GET) and OpenID Connect Core §3.1.2.1 (POST, a form)."""
    try:
        params = await _params(request)
    except OAuthError:
        # A repeated or oversized parameter (RFC 6749 §3.1): which redirect URI is meant is unknown.
        return error_page(request, "The application sent you here with a request that is not valid.")
    oauth, status = _oauth(request), 302 if request.method == "GET" else 303
    async with unit_of_work(request) as uow:
        try:
            ask = await authorize.validate(uow.db, oauth, params)
            browser = await current_browser_session(request, uow.db)
            return await _next_step(uow, oauth, ask, browser, status=status)
        except PageError as error:
            return error_page(request, error.message)
        except RedirectError as error:
            return _redirect(authorize.error_url(error, oauth.issuer), status)


async def _next_step(
    uow: UnitOfWork,
    oauth: OAuthService,
    ask: AuthorizationRequest,
    browser: BrowserSessionRow | None,
    *,
    status: int = 303,
    consented: bool = False,
) -> Response:
    """Redirect to what ``decide`` says comes next (RedirectError/PageError pass through)."""
    outcome = await authorize.decide(uow.db, oauth, ask, browser, consented=consented)
    if isinstance(outcome, SignIn | Consent):
        pending = await authorize.save_pending(uow.db, oauth, outcome.request)
        page = "sign-in" if isinstance(outcome, SignIn) else "consent"
        return _redirect(f"/oauth2/{page}?request={pending.handle}", status)
    return _redirect(outcome, status)


async def _pending(uow: UnitOfWork, oauth: OAuthService, handle: str | None) -> AuthorizationRequest:
    ask = await authorize.load_pending(uow.db, oauth, handle)
    if ask is None:
        raise PageError("This sign-in has expired or was already completed. Start again from the application.")
    return ask


# --- sign-in ------------------------------------------------------------------


@router.get("/oauth2/sign-in", dependencies=[Depends(PAGES_BY_ADDRESS)])
async def sign_in_page(request: Request) -> Response:
    """The sign-in form, for a pending authorization (``request``) or a device code (``next``)."""
    try:
        params = read_query(request)
    except OAuthError as exc:
        return _refused(request, exc)
    handle, next_ = params.get("request"), _safe_next(params.get("next"))
    ask = None
    if handle is not None:
        async with unit_of_work(request) as uow:
            try:
                ask = await _pending(uow, _oauth(request), handle)
            except (PageError, RedirectError):
                return error_page(request, "This sign-in has expired. Start again from the application.")
    email = (ask.login_hint if ask else None) or ""
    return _render(request, "sign_in.html", "Sign in", ask=ask, next=next_, email=email)


def _safe_next(value: str | None) -> str | None:
    return value if value is not None and _NEXT.fullmatch(value) else None


@router.post("/oauth2/sign-in", dependencies=[Depends(LOGIN_BY_ADDRESS)])
async def sign_in(request: Request) -> Response:
    """The first factor; then the second-factor page, or the next step of the flow."""
    try:
        form = await _form(request)
    except (CsrfRefused, OAuthError) as exc:
        return _refused(request, exc)
    oauth, handle, next_ = _oauth(request), form.get("request"), _safe_next(form.get("next"))
    raw = form.get("email", "")
    email = sign_in_address(raw) if len(raw) <= 254 else None
    again = {"next": next_, "email": raw[:254]}
    ask: AuthorizationRequest | None = None
    try:
        async with unit_of_work(request) as uow:
            ask = await _pending(uow, oauth, handle) if handle is not None else None
        if email is None:
            raise LoginFailed
        # The API's per-account budget, before any hashing.
        await LOGIN_BY_ACCOUNT.hit(request, account_key(email))
        async with unit_of_work(request) as uow:
            user = await oauth.identity.authenticate(uow, email, form.get("password", ""))
            # TOTP, or a mailed code while a detection rule requires a step-up (same page, same field).
            if (challenge := await oauth.identity.second_step(uow, user)) is not None:
                page: Response = _render(
                    request, "second_factor.html", "Two-step verification", ask=ask, next=next_,
                    mfa_token=challenge.mfa_token,
                )  # fmt: skip
            else:
                page = await _signed_in(request, uow, oauth, user.id, amr=["pwd"], mfa=False, ask=ask, next_=next_)
            end_provider_flow(page)  # a provider sign-in left unfinished in this browser is not this one
            return page
    except (PageError, RedirectError):
        return error_page(request, "This sign-in has expired. Start again from the application.")
    except TooManyRequests as exc:
        page = _render(
            request,
            "sign_in.html",
            "Sign in",
            status=429,
            ask=ask,
            error="Too many attempts. Wait a minute, then try again.",
            **again,
        )
        page.headers.update(exc.headers)
        return page
    except (EmailNotVerified, PasswordResetRequired) as exc:
        error = (
            "Choose a new password first: open the link in the mail you were just sent."
            if isinstance(exc, PasswordResetRequired)
            else "Confirm your email address first: open the link in the mail you were sent."
        )
        return _render(request, "sign_in.html", "Sign in", status=403, ask=ask, error=error, **again)
    except LoginFailed:
        return _render(request, "sign_in.html", "Sign in", status=401, ask=ask, error=SIGNED_IN_FAILED, **again)


@router.post("/oauth2/sign-in/mfa", dependencies=[Depends(MFA_BY_ADDRESS)])
async def second_factor(request: Request) -> Response:
    """The second factor (TOTP or a recovery code), bound to the first by the MFA step token."""
    try:
        form = await _form(request)
    except (CsrfRefused, OAuthError) as exc:
        return _refused(request, exc)
    oauth, handle, next_ = _oauth(request), form.get("request"), _safe_next(form.get("next"))
    token = form.get("mfa_token", "")
    factor = SecondFactor(form.get("code"), form.get("recovery_code") if form.get("code") is None else None)
    ask: AuthorizationRequest | None = None
    try:
        async with unit_of_work(request) as uow:
            ask = await _pending(uow, oauth, handle) if handle is not None else None
        async with unit_of_work(request) as uow:
            if factor.code is None and factor.recovery_code is None:
                raise InvalidMfa
            user = await oauth.identity.complete_mfa(uow, token[:128], factor)
            # The first factor: this browser's provider sign-in of this very account, or the password.
            first = AMR_FEDERATED if await signed_in_with_provider(request, uow.db, oauth, user.id) else "pwd"
            # A mailed step-up code (no TOTP) is not a second factor: the session is not an MFA one.
            mfa = user.totp_enabled
            page = await _signed_in(
                request, uow, oauth, user.id, amr=[first, "otp"] if mfa else [first], mfa=mfa, ask=ask, next_=next_
            )
            end_provider_flow(page)
            return page
    except (PageError, RedirectError):
        return error_page(request, "This sign-in has expired. Start again from the application.")
    except InvalidMfa:
        return _render(
            request, "second_factor.html", "Two-step verification", status=401, ask=ask, next=next_,
            mfa_token=token[:128], error=MFA_FAILED,
        )  # fmt: skip


@router.get(HOSTED_LANDING, dependencies=[Depends(LOGIN_BY_ADDRESS)])
async def provider_signed_in(request: Request) -> Response:
    """Where a ``mode=hosted`` provider callback ends: the second factor, or signed in as a password would be."""
    oauth = _oauth(request)
    try:
        async with unit_of_work(request) as uow:
            taken = await take_hosted_sign_in(request, uow, oauth)
            user = await oauth.identity.by_id(uow.db, taken.user_id) if taken is not None else None
            if taken is None or user is None or user.disabled:
                refused = error_page(request, "This sign-in has expired or was already completed. Start again.")
                end_provider_flow(refused)
                return refused
            ask = await _pending(uow, oauth, taken.resume) if taken.resume is not None else None
            if user.totp_enabled:
                # Never skipped: the provider is one factor. The flow cookie stays for the amr (second_factor).
                token = await oauth.identity.start_mfa(uow, user)
                return _render(request, "second_factor.html", "Two-step verification", ask=ask, mfa_token=token)
            page = await _signed_in(request, uow, oauth, user.id, amr=[AMR_FEDERATED], mfa=False, ask=ask, next_=None)
            end_provider_flow(page)
            return page
    except (PageError, RedirectError):
        page = error_page(request, "This sign-in has expired. Start again from the application.")
        end_provider_flow(page)
        return page


async def _signed_in(
    request: Request,
    uow: UnitOfWork,
    oauth: OAuthService,
    user_id: Any,
    *,
    amr: list[str],
    mfa: bool,
    ask: AuthorizationRequest | None,
    next_: str | None,
) -> Response:
    """Open the browser session (ending the one it replaces) and go on with the flow."""
    before = await current_browser_session(request, uow.db)
    if before is not None:
        await end_browser_session(uow, oauth, before, reason="signed_in_again")
    value = await open_browser_session(uow, oauth, user_id, amr=amr, mfa=mfa)
    browser = await _browser_of(uow, oauth, value)
    if ask is not None:
        try:
            response: Response = await _next_step(uow, oauth, ask, browser)
        except RedirectError as error:
            response = _redirect(authorize.error_url(error, oauth.issuer))
    elif next_ is not None:
        response = _redirect(next_)
    else:
        response = _message(request, "Signed in", "You are signed in. You can close this page.")
    set_browser_cookie(response, value)
    return response


async def _browser_of(uow: UnitOfWork, oauth: OAuthService, value: str) -> BrowserSessionRow:
    found = await browser_session_of(uow.db, oauth, value)
    assert found is not None  # noqa: S101 - opened in this very transaction
    return found


# --- consent ------------------------------------------------------------------


@router.get("/oauth2/consent", dependencies=[Depends(PAGES_BY_ADDRESS)])
async def consent_page(request: Request) -> Response:
    """The client's name and what it asks for, in words; Allow or Deny."""
    try:
        params = read_query(request)
    except OAuthError as exc:
        return _refused(request, exc)
    oauth = _oauth(request)
    async with unit_of_work(request) as uow:
        try:
            ask = await _pending(uow, oauth, params.get("request"))
        except (PageError, RedirectError):
            return error_page(request, "This sign-in has expired. Start again from the application.")
        browser = await current_browser_session(request, uow.db)
        if browser is None:
            return _redirect(f"/oauth2/sign-in?request={ask.handle}", 303)
        user = await oauth.identity.by_id(uow.db, browser.user_id)
    words = [describe_scope(scope) for scope in ask.scopes]
    email = user.email if user is not None else ""
    return _render(
        request, "consent.html", "Allow access?", ask=ask, consent_client=ask.client.name, scopes=words, email=email
    )


@router.post("/oauth2/consent", dependencies=[Depends(PAGES_BY_ADDRESS)])
async def consent_decision(request: Request) -> Response:  # noqa: PLR0911 - one answer per outcome
    try:
        form = await _form(request)
    except (CsrfRefused, OAuthError) as exc:
        return _refused(request, exc)
    oauth, decision = _oauth(request), form.get("decision")
    async with unit_of_work(request) as uow:
        try:
            ask = await _pending(uow, oauth, form.get("request"))
            browser = await current_browser_session(request, uow.db)
            if browser is None:
                return _redirect(f"/oauth2/sign-in?request={ask.handle}")
            if decision == "allow":
                # The code first: it claims the pending request, so a replayed post changes nothing.
                response = await _next_step(uow, oauth, ask, browser, consented=True)
                await consent.remember(uow, oauth, browser.user_id, ask.client.id, list(ask.scopes))
                return response
            if decision == "deny":
                return _redirect(await authorize.deny(uow.db, oauth, ask))
            return error_page(request, "The request was not valid.")
        except PageError as error:
            return error_page(request, error.message)
        except RedirectError as error:
            return _redirect(authorize.error_url(error, oauth.issuer))


# --- logout -------------------------------------------------------------------


@router.api_route("/oauth2/logout", methods=["GET", "POST"], dependencies=[Depends(authorize.AUTHORIZE_BY_ADDRESS)])
async def logout_endpoint(request: Request) -> Response:
    """OpenID RP-Initiated Logout 1.0 §2: checks the request, then asks the user to confirm."""
    try:
        params = await _params(request)
    except OAuthError:
        return error_page(request, "The application sent you here with a request that is not valid.")
    oauth = _oauth(request)
    async with unit_of_work(request) as uow:
        try:
            ask = await logout.validate(uow.db, oauth, params)
        except PageError as error:
            return error_page(request, error.message)
        browser = await current_browser_session(request, uow.db)
        user = await oauth.identity.by_id(uow.db, browser.user_id) if browser is not None else None
    if browser is None:
        if ask.post_logout_redirect_uri is not None:
            return _redirect(ask.redirect_url(), 302 if request.method == "GET" else 303)
        return _message(request, "Signed out", "You are signed out.")
    if ask.post_logout_redirect_uri is not None:
        allow_form_action(request.scope, _origin(ask.post_logout_redirect_uri))
    return _render(
        request, "logout.html", "Sign out", carried=ask.carried(), email=user.email if user else None,
        client_name=ask.client.name if ask.client else None,
    )  # fmt: skip


@router.post("/oauth2/logout/confirm", dependencies=[Depends(PAGES_BY_ADDRESS)])
async def logout_confirm(request: Request) -> Response:
    """The user confirmed: end the browser session and its session, tell the clients (Back-Channel Logout 1.0)."""
    try:
        form = await _form(request)
    except (CsrfRefused, OAuthError) as exc:
        return _refused(request, exc)
    oauth = _oauth(request)
    notices: list[logout.Notice] = []
    async with unit_of_work(request) as uow:
        try:
            ask = await logout.validate(uow.db, oauth, form, confirmed=True)
        except PageError as error:
            return error_page(request, error.message)
        browser = await current_browser_session(request, uow.db)
        if browser is not None:
            notices = await logout.end(uow, oauth, browser)
    await logout.send_backchannel(oauth, notices)
    if ask.post_logout_redirect_uri is not None:
        response: Response = _redirect(ask.redirect_url())
    else:
        response = _message(request, "Signed out", "You are signed out.")
    clear_browser_cookie(response)
    return response


# --- device (RFC 8628 §3.3) ---------------------------------------------------


@router.get("/oauth2/device/verify", dependencies=[Depends(DEVICE_BY_ADDRESS)])
async def device_page(request: Request) -> Response:
    """Where a user enters the code their device shows (``verification_uri``); with ``user_code``, pre-filled."""
    try:
        params = read_query(request)
    except OAuthError as exc:
        return _refused(request, exc)
    code = normalise_user_code(params.get("user_code", ""))
    shown = display_user_code(code) if code else ""
    return _render(request, "device.html", "Connect a device", user_code=shown, device_client=None)


@router.post("/oauth2/device/verify", dependencies=[Depends(DEVICE_BY_ADDRESS)])
async def device_verify(request: Request) -> Response:
    """The code entered: sign in if need be, then show what the device asks for."""
    try:
        form = await _form(request)
    except (CsrfRefused, OAuthError) as exc:
        return _refused(request, exc)
    oauth = _oauth(request)
    code = normalise_user_code(form.get("user_code", ""))
    async with unit_of_work(request) as uow:
        pending = await device.pending(uow.db, oauth, code) if code else None
        if code is None or pending is None:
            return _render(request, "device.html", "Connect a device", status=400, user_code="", device_client=None,
                           error="That code is not valid or has expired. Check the code on your device.")  # fmt: skip
        browser = await current_browser_session(request, uow.db)
    if browser is None:
        return _redirect("/oauth2/sign-in?next=" + quote(f"/oauth2/device/verify?user_code={code}", safe=""))
    words = [describe_scope(scope) for scope in pending.scopes]
    return _render(
        request, "device.html", "Connect a device", user_code=display_user_code(code),
        device_client=pending.client_name, scopes=words,
    )  # fmt: skip


@router.post("/oauth2/device/decision", dependencies=[Depends(DEVICE_BY_ADDRESS)])
async def device_decision(request: Request) -> Response:
    try:
        form = await _form(request)
    except (CsrfRefused, OAuthError) as exc:
        return _refused(request, exc)
    oauth, decision = _oauth(request), form.get("decision")
    code = normalise_user_code(form.get("user_code", ""))
    if decision not in ("allow", "deny") or not code:
        return error_page(request, "The request was not valid.")
    async with unit_of_work(request) as uow:
        browser = await current_browser_session(request, uow.db)
        if browser is None:
            return _redirect("/oauth2/sign-in?next=" + quote(f"/oauth2/device/verify?user_code={code}", safe=""))
        decided = await device.decide(uow, oauth, code, browser, allow=decision == "allow")
    if not decided:
        return error_page(request, "That code is not valid, has expired or was already used.")
    if decision == "allow":
        return _message(request, "Device connected", "Your device is connected. You can return to it now.")
    return _message(request, "Request denied", "The device was not connected.")


__all__ = ["Problem", "error_page", "router"]
