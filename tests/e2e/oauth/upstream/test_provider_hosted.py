"""Sign in with another provider from the HOSTED sign-in page, against a REAL upstream (npm oidc-provider).

The flow a browser takes: an application's ``/oauth2/authorize`` → the hosted
sign-in page → "Sign in with first" (``…/start?mode=hosted&request=H``) →
the provider (provider.js signs the ``login_as`` account in) → Bastion's
callback → ``/oauth2/sign-in/provider`` → (the second factor, for an account
with TOTP) → consent → the code at the application's redirect URI.

ASVS 5.0: V10.5.2 (the user is the provider identity (iss, sub)), V10.1.2 and
V10.2.1 (``state`` bound to the browser; tampered refused), V6.3.3 (a provider
sign-in never skips the account's second factor), V6.8.4 (nothing about
the provider's own sign-in strength is assumed: the session's amr says
``fed``, its acr the single-factor level), V3.3.1-V3.3.2 (the
browser cookie is ``__Host-``, Secure, HttpOnly, SameSite=Lax), V3.4.3 (the
page's CSP is unchanged by the provider links).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from html import unescape
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from bastion.audit.models import AuditEvent
from bastion.identity.models import User
from bastion.oauth.federation import BROWSER_COOKIE, HOSTED_LANDING
from bastion.oauth.models import BrowserSession, LinkedIdentity, OAuthCode, ProviderFlow
from bastion.oauth.oidc import ID_TOKEN_TYP
from bastion.security import hash_token
from conftest import Browser as ProviderBrowser
from conftest import Upstream, new_account_id, query_of, with_query
from factories import unit_of_work
from factories.hosted import REDIRECT_URI, add_client, authorize_query, forms_of, pkce
from factories.hosted import Browser as PagesBrowser
from harness import PASSWORD, Harness

pytestmark = pytest.mark.e2e

_PROVIDER_LINK = re.compile(r'<a class="provider" href="([^"]+)">Sign in with ([^<]+)</a>')


def _links(page: httpx.Response) -> dict[str, str]:
    """The sign-in page's provider links: name → href (unescaped, as the browser follows it)."""
    return {unescape(name): unescape(href) for href, name in _PROVIDER_LINK.findall(page.text)}


def _set_cookies(response: httpx.Response) -> dict[str, str]:
    return {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}


async def _rows(harness: Harness, statement: Any) -> list[Any]:
    return list(await harness.app.state.db.all(statement))


_VERIFIERS: dict[str, str] = {}  # a pending request's handle → its PKCE verifier


async def _sign_in_page(harness: Harness, client_id: str) -> tuple[PagesBrowser, httpx.Response]:
    verifier, challenge = pkce()
    pages = PagesBrowser(harness.client)
    page = await pages.start(authorize_query(client_id, challenge, nonce="n-hosted"))
    assert "sign-in" in forms_of(page.text), page.text
    _VERIFIERS[forms_of(page.text)["sign-in"].fields["request"]] = verifier
    return pages, page


async def _id_token(harness: Harness, client_id: str, handle: str, location: str) -> dict[str, Any]:
    """The code at the token endpoint (RFC 6749 §4.1.3): the ID token's claims, its signature checked."""
    response = await harness.client.post(
        "/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": query_of(location)["code"],
            "redirect_uri": REDIRECT_URI,
            "client_id": client_id,
            "code_verifier": _VERIFIERS[handle],
        },
    )
    assert response.status_code == 200, response.text
    signer = harness.app.state.oauth.signer
    now = int(harness.clock.now().timestamp())
    claims: dict[str, Any] = signer.verify(response.json()["id_token"], now=now, typ=ID_TOKEN_TYP, audience=client_id)
    return claims


async def _to_callback(harness: Harness, provider: ProviderBrowser, start: str) -> httpx.Response:
    """Start (from a provider link), the provider, Bastion's callback: the callback's answer."""
    response = await harness.client.get(start)
    assert response.status_code == 302, response.text
    return await provider.callback(await provider.at_provider(response.headers["location"]))


async def _code_row(harness: Harness, location: str) -> Any:
    assert location.startswith(REDIRECT_URI + "?"), location
    [row] = await _rows(harness, select(OAuthCode).where(OAuthCode.code_hash == hash_token(query_of(location)["code"])))
    return row


async def _link(harness: Harness, upstream: Upstream, account: str, user_id: uuid.UUID) -> None:
    """A provider identity already linked to ``user_id`` (the state the link flow leaves, made directly)."""
    async with unit_of_work(harness.app) as uow:
        await uow.db.execute(
            insert(LinkedIdentity),
            {
                "id": uuid.uuid4(),
                "user_id": user_id,
                "provider": "first",
                "issuer": upstream.issuer,
                "subject": account,
                "email": None,
                "created_at": harness.clock.now(),
                "last_used_at": None,
            },
        )


async def test_the_sign_in_page_links_every_provider_with_the_pending_request(harness: Harness) -> None:
    """One link per configured provider, carrying the request handle; the page's policy is unchanged (V3.4.3)."""
    client_id = await add_client(harness.app)
    _, page = await _sign_in_page(harness, client_id)
    handle = forms_of(page.text)["sign-in"].fields["request"]
    links = _links(page)
    assert sorted(links) == ["first", "impostor", "plain", "second"]
    for name, href in links.items():
        assert href == f"/api/v1/auth/providers/{name}/start?mode=hosted&request={handle}"
    # The href's "&" is written escaped in the HTML (autoescape), and nothing else is added to the page.
    assert f"start?mode=hosted&amp;request={handle}" in page.text
    policy = page.headers["content-security-policy"]
    assert "unsafe" not in policy
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'none'" in policy
    assert "<script" not in page.text
    assert "style=" not in page.text
    assert not re.search(r"\son[a-z]+=", page.text)
    # The device flow's sign-in (a `next`, no pending request) has no provider links: nothing would resume it.
    device = await harness.client.get("/oauth2/sign-in?next=/oauth2/device/verify")
    assert _links(device) == {}


async def test_a_new_account_signs_in_through_to_the_code(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    """A verified address no account has: a new account, a browser session, consent, the code (V10.5.2)."""
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    provider: ProviderBrowser = browser_for(account)
    client_id = await add_client(harness.app)
    pages, page = await _sign_in_page(harness, client_id)
    handle = forms_of(page.text)["sign-in"].fields["request"]

    back = await _to_callback(harness, provider, _links(page)["first"])
    assert back.status_code == 303, back.text
    assert back.headers["location"] == HOSTED_LANDING
    assert "code=" not in back.headers["location"]
    flow_cookie = back.cookies[BROWSER_COOKIE]
    assert await _rows(harness, select(BrowserSession)) == []  # not yet: the landing page opens it

    landing = await harness.client.get(HOSTED_LANDING)
    assert landing.status_code == 303, landing.text
    cookies = _set_cookies(landing)
    attributes = [part.strip().lower() for part in cookies["__Host-bastion"].split(";")]
    for attribute in ("secure", "httponly", "samesite=lax", "path=/"):
        assert attribute in attributes
    assert not [a for a in attributes if a.startswith("domain")]
    assert (
        "max-age=0" in cookies[BROWSER_COOKIE].lower() or "expires=thu, 01 jan 1970" in cookies[BROWSER_COOKIE].lower()
    )
    value = cookies["__Host-bastion"].split(";")[0].split("=", 1)[1]
    [session] = await _rows(harness, select(BrowserSession))
    assert session.token_hash == hash_token(value)
    assert session.amr == ["fed"]

    consent = await pages.follow(landing)
    assert "consent" in forms_of(consent.text), consent.text
    done = await pages.follow(await pages.submit(consent, "consent", decision="allow"))
    assert done.status_code == 303
    code = await _code_row(harness, done.headers["location"])
    [user] = await _rows(harness, select(User))
    assert (code.client_id, code.user_id, code.nonce) == (client_id, user.id, "n-hosted")
    # The ID token's amr/acr come from the code: a provider sign-in, never a second factor.
    assert code.amr == ["fed"]
    assert code.acr == "urn:bastion:pwd"
    claims = await _id_token(harness, client_id, handle, done.headers["location"])
    assert (claims["sub"], claims["nonce"]) == (str(user.id), "n-hosted")
    assert claims["amr"] == ["fed"]
    assert claims["acr"] == "urn:bastion:pwd"

    # The landing's code was single-use: replayed in the same browser (its cookie set again), nothing happens.
    harness.client.cookies.set(BROWSER_COOKIE, flow_cookie)
    replay = await harness.client.get(HOSTED_LANDING)
    assert replay.status_code == 400
    assert "__Host-bastion=" not in replay.headers.get("set-cookie", "")
    assert len(await _rows(harness, select(BrowserSession))) == 1


async def test_an_existing_linked_account_signs_in_and_its_consent_is_remembered(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    """The second sign-in finds the account by (iss, sub) and goes straight to the code."""
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    provider: ProviderBrowser = browser_for(account)
    client_id = await add_client(harness.app)
    pages, page = await _sign_in_page(harness, client_id)
    consent = await pages.follow(await _to_callback(harness, provider, _links(page)["first"]))
    first = await _code_row(
        harness, (await pages.follow(await pages.submit(consent, "consent", decision="allow"))).headers["location"]
    )

    harness.client.cookies.clear()  # another visit: no browser session left
    pages, page = await _sign_in_page(harness, client_id)
    done = await pages.follow(await _to_callback(harness, provider, _links(page)["first"]))
    assert done.status_code == 303, done.text
    second = await _code_row(harness, done.headers["location"])
    assert second.user_id == first.user_id
    assert len(await _rows(harness, select(User))) == 1
    assert len(await _rows(harness, select(LinkedIdentity))) == 1


async def test_a_totp_account_goes_through_the_second_factor(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    """V6.3.3: the provider is one factor; the account's TOTP is still asked, on the same form and endpoint."""
    secret, _ = await harness.with_totp("totp@example.com")
    [user] = await _rows(harness, select(User))
    account = new_account_id()
    upstream["first"].add_account(account, email="someone-else@example.com")
    await _link(harness, upstream["first"], account, user.id)
    provider: ProviderBrowser = browser_for(account)
    client_id = await add_client(harness.app)
    harness.client.cookies.clear()
    pages, page = await _sign_in_page(harness, client_id)
    handle = forms_of(page.text)["sign-in"].fields["request"]

    second = await pages.follow(await _to_callback(harness, provider, _links(page)["first"]))
    assert second.status_code == 200, second.text
    form = forms_of(second.text)["second-factor"]
    assert form.action == "/oauth2/sign-in/mfa"
    assert form.fields["request"] == handle
    assert form.fields["mfa_token"]
    assert "__Host-bastion=" not in second.headers.get("set-cookie", "")
    assert await _rows(harness, select(BrowserSession)) == []
    # Skipping the step: the pending request still wants a sign-in, and consent without one goes back to it.
    assert (
        (await harness.client.get(f"/oauth2/consent?request={handle}"))
        .headers["location"]
        .startswith("/oauth2/sign-in?")
    )

    wrong = await pages.submit(second, "second-factor", code="000000")
    assert wrong.status_code == 401
    assert await _rows(harness, select(BrowserSession)) == []
    consent = await pages.follow(await pages.submit(wrong, "second-factor", code=harness.totp(secret)))
    assert "consent" in forms_of(consent.text), consent.text
    done = await pages.follow(await pages.submit(consent, "consent", decision="allow"))
    code = await _code_row(harness, done.headers["location"])
    assert code.user_id == user.id
    assert code.amr == ["fed", "otp"]
    assert code.acr == "urn:bastion:mfa"
    claims = await _id_token(harness, client_id, handle, done.headers["location"])
    assert (claims["amr"], claims["acr"]) == (["fed", "otp"], "urn:bastion:mfa")


async def test_a_password_sign_in_after_an_unfinished_provider_one_claims_a_password(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    """The amr names the first factor actually used: a provider step left unfinished does not leak into it,
    not even with its cookie put back by hand before the second factor of another account."""
    await harness.with_totp("linked@example.com")
    secret, _ = await harness.with_totp("other@example.com")
    linked = (await _rows(harness, select(User).where(User.email == "linked@example.com")))[0]
    account = new_account_id()
    upstream["first"].add_account(account, email="someone-else@example.com")
    await _link(harness, upstream["first"], account, linked.id)
    provider: ProviderBrowser = browser_for(account)
    client_id = await add_client(harness.app)
    harness.client.cookies.clear()
    pages, page = await _sign_in_page(harness, client_id)
    back = await _to_callback(harness, provider, _links(page)["first"])
    abandoned = await pages.follow(back)
    assert "second-factor" in forms_of(abandoned.text)

    pages, page = await _sign_in_page(harness, client_id)
    second = await pages.submit(page, "sign-in", email="other@example.com", password=PASSWORD)
    assert BROWSER_COOKIE not in harness.client.cookies  # the password step ended the provider flow
    harness.client.cookies.set(BROWSER_COOKIE, back.cookies[BROWSER_COOKIE])
    consent = await pages.follow(await pages.submit(second, "second-factor", code=harness.totp(secret)))
    done = await pages.follow(await pages.submit(consent, "consent", decision="allow"))
    code = await _code_row(harness, done.headers["location"])
    assert code.amr == ["pwd", "otp"]


async def test_without_a_pending_request_it_ends_signed_in(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    provider: ProviderBrowser = browser_for(account)
    landing = await harness.client.get(
        (await _to_callback(harness, provider, "/api/v1/auth/providers/first/start?mode=hosted")).headers["location"]
    )
    assert landing.status_code == 200
    assert "You are signed in" in landing.text
    assert "__Host-bastion=" in landing.headers["set-cookie"]
    assert len(await _rows(harness, select(BrowserSession))) == 1


async def test_tampered_state_is_refused_in_hosted_mode(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    """V10.1.2, V10.2.1: the attacker in the browser changes ``state``: no account, no session; the real one works."""
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    provider: ProviderBrowser = browser_for(account)
    client_id = await add_client(harness.app)
    _, page = await _sign_in_page(harness, client_id)
    started = await harness.client.get(_links(page)["first"])
    back = await provider.at_provider(started.headers["location"])
    state = query_of(back)["state"]

    tampered = await provider.callback(with_query(back, state=state[:-2] + ("AA" if state[-2:] != "AA" else "BB")))
    assert tampered.status_code == 400
    assert "location" not in tampered.headers
    assert await _rows(harness, select(User)) == []
    assert (await harness.client.get(HOSTED_LANDING)).status_code == 400  # the browser secret is no code
    assert await _rows(harness, select(BrowserSession)) == []
    events = await _rows(harness, select(AuditEvent))
    assert [e.tag for e in events if e.outcome == "success" and e.tag.startswith(("oauth:", "auth:"))] == []
    assert [e.details["reason"] for e in events if e.tag == "oauth:provider:sign_in"] == ["state"]

    # A fresh start (the landing ended the cookie): the untouched response completes, once.
    started = await harness.client.get(_links(page)["first"])
    back = await provider.at_provider(started.headers["location"])
    assert (await provider.callback(back)).status_code == 303
    assert (await provider.callback(back)).status_code == 400


async def test_a_hosted_code_is_not_an_api_code_and_back(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    """Each ending spends only its own mode's code: a hosted code is refused by the exchange, an API one by the page."""
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    provider: ProviderBrowser = browser_for(account)
    back = await _to_callback(harness, provider, "/api/v1/auth/providers/first/start?mode=hosted")
    hosted = back.cookies[BROWSER_COOKIE]
    exchanged = await harness.client.post("/api/v1/auth/providers/exchange", json={"code": hosted})
    assert exchanged.status_code == 400

    page = await provider.sign_in()  # mode=api
    start = page.text.index('data-code="') + len('data-code="')
    api_code = page.text[start : page.text.index('"', start)]
    harness.client.cookies.set(BROWSER_COOKIE, api_code)
    assert (await harness.client.get(HOSTED_LANDING)).status_code == 400
    assert await _rows(harness, select(BrowserSession)) == []
    assert (await harness.client.post("/api/v1/auth/providers/exchange", json={"code": api_code})).status_code == 200
    # The hosted one still works where it belongs.
    harness.client.cookies.set(BROWSER_COOKIE, hosted)
    assert (await harness.client.get(HOSTED_LANDING)).status_code == 200
    [flow] = await _rows(harness, select(ProviderFlow).where(ProviderFlow.exchange_hash == hash_token(hosted)))
    assert flow.mode == "hosted"
    assert flow.exchanged_at is not None


async def test_the_hosted_code_opens_one_session_however_many_race(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Ten landings with the same code at once: exactly one signs in; the code is never logged."""
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    provider: ProviderBrowser = browser_for(account)
    back = await _to_callback(harness, provider, "/api/v1/auth/providers/first/start?mode=hosted")
    code = back.cookies[BROWSER_COOKIE]
    harness.client.cookies.clear()

    async def land() -> int:
        answer = await harness.client.get(HOSTED_LANDING, headers={"cookie": f"{BROWSER_COOKIE}={code}"})
        return answer.status_code

    statuses = await asyncio.gather(*(land() for _ in range(10)))
    assert sorted(statuses) == [200] + [400] * 9
    assert len(await _rows(harness, select(BrowserSession))) == 1
    events = await _rows(harness, select(AuditEvent))
    assert code not in caplog.text + repr([event.details for event in events])


async def test_a_refused_hosted_sign_in_is_a_page(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    """Once the flow is known to be hosted, a refusal (here: an unverified address) is HTML for the person reading."""
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com", email_verified=False)
    provider: ProviderBrowser = browser_for(account)
    client_id = await add_client(harness.app)
    _, page = await _sign_in_page(harness, client_id)
    refused = await _to_callback(harness, provider, _links(page)["first"])
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("text/html")
    assert "sign in to it and link this provider" in refused.text
    assert "unsafe" not in refused.headers["content-security-policy"]
    assert BROWSER_COOKIE not in harness.client.cookies
    assert await _rows(harness, select(User)) == []
    assert await _rows(harness, select(BrowserSession)) == []
