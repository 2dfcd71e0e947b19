"""The hosted sign-in pages as an attacker sees them: CSRF, cookies, the page
policy, the API's throttles and lockout, generic errors; the consent list
and the device page.

ASVS 5.0: V3.3.1-V3.3.2 (``__Host-`` cookies, Secure, HttpOnly, SameSite),
V3.4.3 (a CSP without unsafe-inline, frame-ancestors 'none'), V3.5.1 (CSRF
tokens on every form; Origin and Sec-Fetch-Site checked), V6.3.1 (the
same brute-force defences as the API), V6.3.8 (one generic error),
V7.2.1 (the session is checked on the server on every request),
V7.4.1 (a revoked session ends the browser session), V10.7.2 (users list and
revoke consents).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import re
import uuid
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import insert, select
from test_authorize import rows, to_code

from bastion.audit.models import AuditEvent
from bastion.identity.models import User
from bastion.logging import LogFormat, configure_logging
from bastion.oauth.models import BrowserSession, OAuthCode, OAuthDeviceCode, OAuthGrant
from bastion.security import hash_token
from factories.hosted import Browser, add_client, authorize_query, forms_of, pkce, query_of
from harness import PASSWORD, Harness


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    return {"auth": {"lockout_threshold": 3, "login_rate_per_account": "5/minute", "mfa_rate_per_ip": "30/minute"}}


async def _sign_in_page(harness: Harness, **extra: str) -> tuple[Browser, httpx.Response]:
    client_id = await add_client(harness.app)
    _, challenge = pkce()
    browser = Browser(harness.client)
    return browser, await browser.start(authorize_query(client_id, challenge, **extra))


def _cookies(response: httpx.Response) -> dict[str, str]:
    return {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}


async def _user_row(harness: Harness, email: str) -> Any:
    return (await rows(harness, select(User).where(User.email == email)))[0]


async def test_the_cookies_are_host_prefixed_secure_httponly_and_lax(harness: Harness) -> None:
    """V3.3.1, V3.3.2: __Host-, Secure, HttpOnly, SameSite=Lax, Path=/, no Domain; the value stored hashed."""
    await harness.user("alice@example.com")
    browser, page = await _sign_in_page(harness)
    answer = await browser.submit(page, "sign-in", email="alice@example.com", password=PASSWORD)
    cookies = {**_cookies(page), **_cookies(answer)}
    for name in ("__Host-bastion", "__Host-bastion-csrf"):
        attributes = [part.strip().lower() for part in cookies[name].split(";")]
        assert "secure" in attributes
        assert "httponly" in attributes
        assert "samesite=lax" in attributes
        assert "path=/" in attributes
        assert not [a for a in attributes if a.startswith("domain")]
    value = cookies["__Host-bastion"].split(";")[0].split("=", 1)[1]
    assert len(value) >= 43  # 32 random bytes
    stored = await rows(harness, select(BrowserSession))
    assert [row.token_hash for row in stored] == [hash_token(value)]


async def test_the_pages_policy(harness: Harness) -> None:
    """V3.4.3: no unsafe-inline, nothing third-party, no framing; the form may post to the client's origin only."""
    _, page = await _sign_in_page(harness)
    policy = dict(part.strip().partition(" ")[::2] for part in page.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["form-action"] == "'self' https://app.example"
    assert "unsafe" not in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert "<script" not in page.text
    assert "<style" not in page.text
    assert "style=" not in page.text
    assert not re.search(r"\son[a-z]+=", page.text)
    assert re.findall(r'(?:href|src)="([^"]+)"', page.text) == ["/pages/assets/favicon.svg", "/pages/assets/pages.css"]
    # Accessible: every input but the hidden ones has a label and an autocomplete purpose.
    assert 'for="email"' in page.text
    assert 'autocomplete="username"' in page.text
    assert 'autocomplete="current-password"' in page.text
    # A page with no client names no other origin.
    plain = await harness.client.get("/oauth2/sign-in")
    assert "form-action 'self';" in plain.headers["content-security-policy"]


async def test_an_error_page_names_no_origin(harness: Harness) -> None:
    client_id = await add_client(harness.app)
    _, challenge = pkce()
    query = authorize_query(client_id, challenge, redirect_uri="https://evil.example/cb")
    page = await harness.client.get("/oauth2/authorize?" + urlencode(query))
    assert page.status_code == 400
    assert "form-action 'self';" in page.headers["content-security-policy"]
    assert "evil" not in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("token", "headers"),
    [
        (None, {}),
        ("0" * 64, {}),
        ("", {}),
        ("valid", {"origin": "https://evil.example"}),
        ("valid", {"sec-fetch-site": "cross-site"}),
        ("valid", {"sec-fetch-site": "same-site"}),
        ("valid", {"origin": "null", "sec-fetch-site": "cross-site"}),
        ("valid", {"origin": "https://127.0.0.1:8444", "sec-fetch-site": "same-origin"}),
    ],
)
async def test_a_forged_sign_in_is_refused_before_anything_happens(
    harness: Harness, token: str | None, headers: dict[str, str]
) -> None:
    """V3.5.1: missing, wrong or cross-site CSRF refused, and not even counted as a failed sign-in."""
    await harness.user("alice@example.com")
    _browser, page = await _sign_in_page(harness)
    fields = dict(forms_of(page.text)["sign-in"].fields)
    if token is None:
        del fields["csrf_token"]
    elif token != "valid":
        fields["csrf_token"] = token
    fields |= {"email": "alice@example.com", "password": "wrong-password"}
    answer = await harness.client.post("/oauth2/sign-in", data=fields, headers=headers)
    assert answer.status_code == 403
    assert "did not come from this site" in answer.text
    assert (await _user_row(harness, "alice@example.com")).failed_logins == 0
    fields["password"] = PASSWORD
    assert (await harness.client.post("/oauth2/sign-in", data=fields, headers=headers)).status_code == 403
    assert await rows(harness, select(BrowserSession)) == []
    assert [e.tag for e in await rows(harness, select(AuditEvent)) if e.tag.startswith("auth:login")] == []


async def test_a_token_of_another_browser_is_refused(harness: Harness) -> None:
    await harness.user("alice@example.com")
    _, page = await _sign_in_page(harness)
    theirs = forms_of(page.text)["sign-in"].fields
    harness.client.cookies.clear()  # a different browser: its own CSRF cookie
    mine = await harness.client.get("/oauth2/sign-in")
    assert "__Host-bastion-csrf" in _cookies(mine)
    answer = await harness.client.post(
        "/oauth2/sign-in", data={**theirs, "email": "alice@example.com", "password": PASSWORD}
    )
    assert answer.status_code == 403


async def test_the_same_origin_is_accepted(harness: Harness) -> None:
    await harness.user("alice@example.com")
    _browser, page = await _sign_in_page(harness)
    fields = {**forms_of(page.text)["sign-in"].fields, "email": "alice@example.com", "password": PASSWORD}
    same = {"origin": "https://127.0.0.1:8443", "sec-fetch-site": "same-origin"}
    answer = await harness.client.post("/oauth2/sign-in", data=fields, headers=same)
    assert answer.status_code == 303
    # What Chromium sends under Referrer-Policy: no-referrer.
    harness.client.cookies.delete("__Host-bastion")
    chromium = {"origin": "null", "sec-fetch-site": "same-origin"}
    answer = await harness.client.post("/oauth2/sign-in", data=fields, headers=chromium)
    assert answer.status_code == 303


async def test_a_forged_consent_is_refused(harness: Harness) -> None:
    await harness.user("alice@example.com")
    browser, page = await _sign_in_page(harness)
    consent = await browser.sign_in(page, "alice@example.com", PASSWORD)
    fields = {**forms_of(consent.text)["consent"].fields, "decision": "allow", "csrf_token": "f" * 64}
    assert (await harness.client.post("/oauth2/consent", data=fields)).status_code == 403
    assert await rows(harness, select(OAuthCode)) == []


async def test_the_browser_cookie_never_authenticates_the_api(harness: Harness) -> None:
    """The API takes no cookies, so it needs no CSRF defence: a signed-in browser is anonymous there."""
    await harness.user("alice@example.com")
    browser, page = await _sign_in_page(harness)
    await browser.sign_in(page, "alice@example.com", PASSWORD)
    assert "__Host-bastion" in harness.client.cookies
    for path in ("/api/v1/me", "/api/v1/me/sessions", "/api/v1/me/oauth/consents"):
        answer = await harness.client.get(path)
        assert answer.status_code == 401, path


async def test_errors_are_generic(harness: Harness) -> None:
    """V6.3.8: an unknown address and a wrong password read the same."""
    await harness.user("alice@example.com")
    answers = []
    for email, password in (("alice@example.com", "wrong-password"), ("nobody@example.com", PASSWORD)):
        browser, page = await _sign_in_page(harness)
        answers.append(await browser.submit(page, "sign-in", email=email, password=password))
    assert [a.status_code for a in answers] == [401, 401]
    errors = [re.search(r'<p id="error" role="alert">([^<]*)</p>', a.text) for a in answers]
    assert errors[0] is not None
    assert errors[1] is not None
    assert errors[0][1] == errors[1][1]


async def test_a_locked_account_stays_locked_on_the_hosted_page(harness: Harness) -> None:
    """V6.3.1: wrong passwords here count towards the API's lockout, and the right one is then refused."""
    await harness.user("alice@example.com")
    for _ in range(3):
        browser, page = await _sign_in_page(harness)
        assert (
            await browser.submit(page, "sign-in", email="alice@example.com", password="nope-nope")
        ).status_code == 401
    assert (await _user_row(harness, "alice@example.com")).locked_until is not None
    browser, page = await _sign_in_page(harness)
    answer = await browser.submit(page, "sign-in", email="alice@example.com", password=PASSWORD)
    assert answer.status_code == 401
    assert "__Host-bastion=" not in answer.headers.get("set-cookie", "")
    assert await rows(harness, select(BrowserSession)) == []
    # The API agrees, and the audit trail has the lockout.
    api = await harness.client.post("/api/v1/auth/login", json={"email": "alice@example.com", "password": PASSWORD})
    assert api.status_code == 401
    tags = [e.tag for e in await rows(harness, select(AuditEvent))]
    assert "auth:lockout" in tags


async def test_the_per_account_throttle_applies(harness: Harness) -> None:
    """The API's LOGIN_BY_ACCOUNT budget (5/minute here) is shared with the hosted page."""
    await harness.user("alice@example.com")
    await harness.client.post("/api/v1/auth/login", json={"email": "alice@example.com", "password": "wrong-one"})
    statuses = []
    for _ in range(5):
        browser, page = await _sign_in_page(harness)
        statuses.append((await browser.submit(page, "sign-in", email="ALICE@example.com", password="x")).status_code)
    # Four more wrong ones (the third locks the account, still a 401), then the budget is spent.
    assert statuses == [401, 401, 401, 401, 429]


async def test_the_second_factor_step(harness: Harness) -> None:
    """TOTP after the password; a wrong code is a generic error and counts; a recovery code works once."""
    secret, recovery = await harness.with_totp("alice@example.com")
    browser, page = await _sign_in_page(harness)
    second = await browser.submit(page, "sign-in", email="alice@example.com", password=PASSWORD)
    assert second.status_code == 200
    assert "second-factor" in forms_of(second.text)
    assert 'autocomplete="one-time-code"' in second.text
    assert "__Host-bastion=" not in second.headers.get("set-cookie", "")
    wrong = await browser.submit(second, "second-factor", code="000000")
    assert wrong.status_code == 401
    assert (await _user_row(harness, "alice@example.com")).failed_mfa == 1
    right = await browser.follow(await browser.submit(wrong, "second-factor", code=harness.totp(secret)))
    assert "consent" in forms_of(right.text)
    stored = await rows(harness, select(BrowserSession))
    assert [row.amr for row in stored] == [["pwd", "otp"]]
    # A recovery code, from a fresh browser.
    harness.client.cookies.clear()
    browser, page = await _sign_in_page(harness)
    second = await browser.submit(page, "sign-in", email="alice@example.com", password=PASSWORD)
    answer = await browser.submit(second, "second-factor", code="", recovery_code=recovery[0])
    assert answer.status_code == 303


async def test_a_revoked_session_ends_the_browser_session(harness: Harness) -> None:
    """V7.4.1: the session list shows the browser's session; revoking it signs the browser out."""
    await harness.user("alice@example.com")
    client_id = await add_client(harness.app, first_party=True)
    browser = Browser(harness.client)
    await to_code(harness, client_id, "alice@example.com", browser=browser)
    cookies = dict(harness.client.cookies)
    harness.client.cookies.clear()
    tokens = await harness.login("alice@example.com")
    session_id = (await rows(harness, select(BrowserSession)))[0].session_id
    listed = (await harness.client.get("/api/v1/me/sessions", headers=harness.bearer(tokens))).json()
    assert str(session_id) in [s["id"] for s in listed]
    revoked = await harness.client.delete(f"/api/v1/me/sessions/{session_id}", headers=harness.bearer(tokens))
    assert revoked.status_code == 204
    harness.client.cookies.update(cookies)
    _, challenge = pkce()
    again = await harness.client.get("/oauth2/authorize?" + urlencode(authorize_query(client_id, challenge)))
    assert again.status_code == 302
    assert again.headers["location"].startswith("/oauth2/sign-in?request=")


async def _grant(harness: Harness, client_id: str, user_id: uuid.UUID) -> uuid.UUID:
    grant_id, now = uuid.uuid4(), harness.clock.now()
    tx = harness.app.state.db.begin()
    await tx.execute(
        insert(OAuthGrant),
        {
            "id": grant_id,
            "client_id": client_id,
            "user_id": user_id,
            "scopes": ["openid"],
            "amr": ["pwd"],
            "created_at": now,
            "expires_at": now + dt.timedelta(days=1),
        },
    )
    await tx.close(commit=True)
    return grant_id


async def test_users_list_and_withdraw_their_consents(harness: Harness) -> None:
    """V10.7.2: the consent list; withdrawing one revokes that client's grants for that user only."""
    alice = await harness.user("alice@example.com")
    bob = await harness.user("bob@example.com")
    client_id = await add_client(harness.app)
    for email in ("alice@example.com", "bob@example.com"):
        harness.client.cookies.clear()
        await to_code(harness, client_id, email)
    alices, bobs = await _grant(harness, client_id, alice.id), await _grant(harness, client_id, bob.id)
    harness.client.cookies.clear()
    tokens = await harness.sign_in(alice)
    listed = await harness.client.get("/api/v1/me/oauth/consents", headers=harness.bearer(tokens))
    assert listed.status_code == 200
    assert [(c["client_id"], c["client_name"], c["scopes"]) for c in listed.json()] == [
        (client_id, "Example App", ["openid", "email"])
    ]
    gone = await harness.client.delete(f"/api/v1/me/oauth/consents/{client_id}", headers=harness.bearer(tokens))
    assert gone.status_code == 204
    assert (await harness.client.get("/api/v1/me/oauth/consents", headers=harness.bearer(tokens))).json() == []
    assert (
        await harness.client.delete(f"/api/v1/me/oauth/consents/{client_id}", headers=harness.bearer(tokens))
    ).status_code == 404
    grants = {g.id: g for g in await rows(harness, select(OAuthGrant))}
    assert grants[alices].revoked_at is not None
    assert grants[alices].revoke_reason == "consent_revoked"
    assert grants[bobs].revoked_at is None
    # Asked again next time.
    _, challenge = pkce()
    browser = Browser(harness.client)
    page = await browser.sign_in(
        await browser.start(authorize_query(client_id, challenge)), "alice@example.com", PASSWORD
    )
    assert "consent" in forms_of(page.text)


async def _device_code(harness: Harness, client_id: str, user_code: str) -> None:
    now = harness.clock.now()
    tx = harness.app.state.db.begin()
    await tx.execute(
        insert(OAuthDeviceCode),
        {
            "device_code_hash": hash_token("device-" + user_code),
            "user_code": user_code,
            "client_id": client_id,
            "scopes": ["openid", "me:read"],
            "created_at": now,
            "expires_at": now + dt.timedelta(seconds=600),
        },
    )
    await tx.close(commit=True)


@pytest.mark.parametrize("decision", ["allow", "deny"])
async def test_the_device_page(harness: Harness, decision: str) -> None:
    """RFC 8628 §3.3: enter the code, sign in, see the client and scopes, decide once."""
    alice = await harness.user("alice@example.com")
    client_id = await add_client(harness.app, grant_types=["urn:ietf:params:oauth:grant-type:device_code"])
    await _device_code(harness, client_id, "BDFHJKLM")
    browser = Browser(harness.client)
    page = await browser.get("/oauth2/device/verify", params={"user_code": "bdfhjklm"})
    assert forms_of(page.text)["device"].fields["user_code"] == "BDFH-JKLM"
    wrong = await browser.submit(page, "device", user_code="ZZZZ-ZZZB")
    assert wrong.status_code == 400
    to_sign_in = await browser.submit(page, "device")
    assert to_sign_in.status_code == 303
    signed_in = await browser.sign_in(await browser.follow(to_sign_in), "alice@example.com", PASSWORD)
    assert forms_of(signed_in.text)["device"].fields["user_code"] == "BDFH-JKLM"
    asked = await browser.submit(signed_in, "device")
    assert "Example App" in asked.text
    assert "See your account and its sessions" in asked.text
    done = await browser.submit(asked, "device-decision", decision=decision)
    assert done.status_code == 200
    (row,) = await rows(harness, select(OAuthDeviceCode))
    assert row.user_id == alice.id
    assert (row.approved_at is not None) == (decision == "allow")
    assert (row.denied_at is not None) == (decision == "deny")
    # Decided once: a replay changes nothing.
    again = await browser.submit(asked, "device-decision", decision="allow")
    assert again.status_code == 400
    (after,) = await rows(harness, select(OAuthDeviceCode))
    assert after.denied_at == row.denied_at
    assert after.approved_at == row.approved_at


async def test_signing_in_without_a_request(harness: Harness) -> None:
    await harness.user("alice@example.com")
    browser = Browser(harness.client)
    page = await browser.get("/oauth2/sign-in")
    answer = await browser.submit(page, "sign-in", email="alice@example.com", password=PASSWORD)
    assert answer.status_code == 200
    assert "You are signed in" in answer.text
    # An off-site "next" is ignored.
    page = await browser.get("/oauth2/sign-in", params={"next": "https://evil.example/"})
    assert "next" not in forms_of(page.text)["sign-in"].fields


async def test_a_pending_handle_that_is_unknown_gets_a_page(harness: Harness) -> None:
    page = await harness.client.get("/oauth2/sign-in", params={"request": "nope"})
    assert page.status_code == 400
    consent = await harness.client.get("/oauth2/consent", params={"request": "nope"})
    assert consent.status_code == 400


@pytest.mark.parametrize("log_format", ["json", "console"])
async def test_no_secret_of_the_hosted_flow_reaches_the_log(harness: Harness, log_format: LogFormat) -> None:
    """V16.2.5, the planted-secret test for the hosted pages: password, TOTP code, MFA step, cookies,
    CSRF token, pending-request handle, PKCE challenge and the code stay out of every log line."""
    secret, _ = await harness.with_totp("alice@example.com")
    client_id = await add_client(harness.app)
    captured = io.StringIO()
    configure_logging("debug", log_format=log_format, stream=captured)
    try:
        verifier, challenge = pkce()
        browser = Browser(harness.client)
        page = await browser.start(authorize_query(client_id, challenge))
        second = await browser.submit(page, "sign-in", email="alice@example.com", password=PASSWORD)
        code = harness.totp(secret)
        consent = await browser.follow(await browser.submit(second, "second-factor", code=code))
        done = await browser.submit(consent, "consent", decision="allow")
        planted = [
            PASSWORD,
            code,
            secret,
            challenge,
            verifier,
            forms_of(second.text)["second-factor"].fields["mfa_token"],
            forms_of(consent.text)["consent"].fields["csrf_token"],
            forms_of(consent.text)["consent"].fields["request"],
            harness.client.cookies["__Host-bastion"],
            harness.client.cookies["__Host-bastion-csrf"],
            query_of(done.headers["location"])["code"],
        ]
    finally:
        configure_logging("info")
    output = captured.getvalue()
    assert "oauth2/consent" in output  # the flow was logged
    for value in planted:
        assert value not in output


async def test_form_bodies_are_taken_under_oauth2_only(harness: Harness) -> None:
    """The spine still takes JSON only on Bastion's own routes."""
    form = {"email": "alice@example.com", "password": PASSWORD}
    assert (await harness.client.post("/api/v1/auth/login", data=form)).status_code == 415
    assert (await harness.client.post("/oauth2/sign-in", data=form)).status_code == 403  # read, then CSRF


@pytest.mark.parametrize(
    "origin", ["https://a.example; script-src *", "https://a.example/path", "*", "'unsafe-inline'", "https://a b"]
)
def test_only_a_bare_origin_can_join_form_action(origin: str) -> None:
    from bastion.http.middleware import _merge_headers, allow_form_action

    scope: dict[str, Any] = {"state": {}}
    allow_form_action(scope, origin)
    allow_form_action(scope, "https://app.example")
    headers = _merge_headers(
        [(b"content-type", b"text/html; charset=utf-8")], [], scope["state"]["bastion.form_action"]
    )
    policy = dict(headers)[b"content-security-policy"].decode()
    assert "form-action 'self' https://app.example;" in policy
    assert origin not in policy


async def test_a_device_code_is_decided_once_however_many_race(harness: Harness) -> None:
    """Ten decisions posted at once for one user code: exactly one is recorded."""
    await harness.user("alice@example.com")
    client_id = await add_client(harness.app, grant_types=["urn:ietf:params:oauth:grant-type:device_code"])
    await _device_code(harness, client_id, "BDFHJKLM")
    browser = Browser(harness.client)
    signed_in = await browser.sign_in(await browser.get("/oauth2/sign-in"), "alice@example.com", PASSWORD)
    assert signed_in.status_code == 200
    asked = await browser.submit(await browser.get("/oauth2/device/verify?user_code=BDFH-JKLM"), "device")
    decisions = ["allow", "deny"] * 5
    answers = await asyncio.gather(*(browser.submit(asked, "device-decision", decision=d) for d in decisions))
    assert sorted(a.status_code for a in answers) == [200] + [400] * 9
    (row,) = await rows(harness, select(OAuthDeviceCode))
    assert (row.approved_at is None) != (row.denied_at is None)


async def test_a_client_name_is_escaped(harness: Harness) -> None:
    """A registered name is data, never markup (Jinja2 autoescape), on the sign-in and consent pages."""
    await harness.user("alice@example.com")
    client_id = await add_client(harness.app, name='<script>alert(1)</script>"')
    _, challenge = pkce()
    browser = Browser(harness.client)
    page = await browser.start(authorize_query(client_id, challenge, login_hint='"><img src=x onerror=alert(1)>'))
    consent = await browser.sign_in(page, "alice@example.com", PASSWORD)
    for html in (page.text, consent.text):
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in page.text
