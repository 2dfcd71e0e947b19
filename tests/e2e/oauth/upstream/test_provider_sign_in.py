"""Sign in with another provider, against a REAL upstream OpenID provider (npm oidc-provider, provider.js).

Every token in these tests is issued and signed by oidc-provider itself. Two
kinds of tampering are done, each said in its test:

- as the attacker in the browser: the test edits the URLs between Bastion
  and the provider (a tampered ``state``, a replaced ``nonce``, a response
  from the other provider on this provider's callback, a missing cookie);
- as a misbehaving provider: provider.js's test-only ``/__test/mutate``
  re-signs the next ID token with the provider's real key but different
  claims (wrong ``aud``, several audiences without ``azp``, wrong ``iss``).

An expired ID token is a real one, presented after Bastion's clock has moved
past its ``exp`` (oidc-provider issues them for 60 s here) plus the leeway.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bastion.audit.models import AuditEvent
from bastion.identity.models import User
from bastion.logging import LogFormat, configure_logging
from bastion.oauth.federation import BROWSER_COOKIE, EXCHANGE_TTL
from bastion.oauth.models import LinkedIdentity, ProviderFlow
from bastion.settings import ConfigError, load_settings
from conftest import (
    CLIENT_SECRET,
    Browser,
    Upstream,
    callback_url,
    exchange_code,
    new_account_id,
    query_of,
    with_query,
)
from harness import PASSWORD, Harness

pytestmark = pytest.mark.e2e


async def _rows(harness: Harness, statement: Any) -> list[Any]:
    return list(await harness.app.state.db.all(statement))


async def _identities(harness: Harness) -> list[Any]:
    return await _rows(harness, select(LinkedIdentity))


async def _users(harness: Harness) -> list[Any]:
    return await _rows(harness, select(User))


async def _exchange(harness: Harness, code: str) -> httpx.Response:
    return await harness.client.post("/api/v1/auth/providers/exchange", json={"code": code})


async def _signed_in_email(harness: Harness, tokens: dict[str, Any]) -> str:
    me = await harness.client.get("/api/v1/me", headers=harness.bearer(tokens))
    assert me.status_code == 200, me.text
    assert me.json()["email_verified"] is True
    return str(me.json()["email"])


async def _reasons(harness: Harness) -> list[str]:
    """The failed check of each refused provider sign-in, in order (from the audit events)."""
    events = await _rows(harness, select(AuditEvent).where(AuditEvent.tag == "oauth:provider:sign_in"))
    return [event.details["reason"] for event in events if event.outcome == "denied"]


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert "data-code" not in response.text


async def test_lists_the_configured_providers(harness: Harness) -> None:
    response = await harness.client.get("/api/v1/auth/providers")
    assert response.json() == {"providers": [{"name": n} for n in ("first", "impostor", "plain", "second")]}
    assert (await harness.client.get("/api/v1/auth/providers/nope/start")).status_code == 404


async def test_start_redirects_with_state_nonce_pkce_and_a_host_cookie(
    harness: Harness, upstream: dict[str, Upstream]
) -> None:
    """V10.2.1: state bound to a __Host- cookie; PKCE S256 (RFC 7636); nonce (OpenID Core §3.1.2.1)."""
    response = await harness.client.get("/api/v1/auth/providers/first/start?mode=api")
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(upstream["first"].issuer + "/auth?")
    params = query_of(location)
    assert params["response_type"] == "code"
    assert params["client_id"] == "bastion"
    assert params["redirect_uri"] == callback_url("first")
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43
    assert len(params["state"]) >= 43
    assert len(params["nonce"]) >= 43
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{BROWSER_COOKIE}=")
    for attribute in ("Secure", "HttpOnly", "SameSite=lax", "Path=/"):
        assert attribute.lower() in cookie.lower()
    assert "domain" not in cookie.lower()


async def test_new_account_then_the_same_account(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A verified address no account has makes a new account; the second sign-in finds it by (iss, sub).

    V10.5.2: the user is the identity (iss, sub); the exchange code, not a token, leaves the callback.
    """
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    browser: Browser = browser_for(account)

    page = await browser.sign_in()
    code = exchange_code(page)
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    exchanged = await _exchange(harness, code)
    assert exchanged.status_code == 200, exchanged.text
    tokens = exchanged.json()
    assert await _signed_in_email(harness, tokens) == f"{account}@example.com"

    again = await _exchange(harness, exchange_code(await browser.sign_in()))
    assert again.status_code == 200
    assert await _signed_in_email(harness, again.json()) == f"{account}@example.com"
    [identity] = await _identities(harness)
    assert (identity.issuer, identity.subject, identity.provider) == (upstream["first"].issuer, account, "first")
    assert len(await _users(harness)) == 1

    events = await _rows(harness, select(AuditEvent).where(AuditEvent.tag == "oauth:provider:sign_in"))
    assert [event.details["new_account"] for event in events] == [True, False]
    logged = caplog.text + repr([event.details for event in await _rows(harness, select(AuditEvent))])
    for secret in (CLIENT_SECRET, code, tokens["access_token"], tokens["refresh_token"]):
        assert secret not in logged


async def test_plain_oauth2_provider_by_explicit_endpoints_and_userinfo_mapping(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    """A GitHub-style provider: no discovery, no ID token; the identity is (configured issuer, mapped subject)."""
    account = new_account_id()
    upstream["second"].add_account(account, email=f"{account}@example.com")
    browser: Browser = browser_for(account)
    authorize = await browser.start("plain")
    assert authorize.startswith(upstream["second"].issuer + "/auth?")
    assert "nonce" not in query_of(authorize)
    first = await _exchange(harness, exchange_code(await browser.callback(await browser.at_provider(authorize))))
    assert await _signed_in_email(harness, first.json()) == f"{account}@example.com"
    assert (await _exchange(harness, exchange_code(await browser.sign_in("plain")))).status_code == 200
    [identity] = await _identities(harness)
    assert (identity.provider, identity.issuer, identity.subject) == ("plain", upstream["second"].issuer, account)


async def test_the_mode_is_api_or_hosted(harness: Harness) -> None:
    """``mode=hosted`` is test_provider_hosted.py's; anything else is refused before a flow exists."""
    assert (await harness.client.get("/api/v1/auth/providers/first/start?mode=other")).status_code == 422
    assert await _rows(harness, select(ProviderFlow)) == []


async def test_tampered_state_is_refused(harness: Harness, upstream: dict[str, Upstream], browser_for: Any) -> None:
    """V10.1.2, V10.2.1: the attacker in the browser changes ``state``; the real one still works once."""
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    browser: Browser = browser_for(account)
    back = await browser.at_provider(await browser.start())
    state = query_of(back)["state"]

    _refused(await browser.callback(with_query(back, state=state[:-2] + ("AA" if state[-2:] != "AA" else "BB"))))
    _refused(await browser.callback(with_query(back, state=None)))
    assert await _users(harness) == []
    # The untouched response still completes, and only once (state is single-use).
    assert exchange_code(await browser.callback(back))
    _refused(await browser.callback(back))
    assert await _reasons(harness) == ["state", "state", "browser"]  # the cookie ends with its flow


async def test_state_without_the_browser_cookie_is_refused(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    """V10.2.1 (login CSRF): a callback URL replayed in another browser (no cookie, or another one) does nothing."""
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    browser: Browser = browser_for(account)
    back = await browser.at_provider(await browser.start())

    transport = httpx.ASGITransport(app=harness.app, client=("203.0.113.9", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as victim:
        _refused(await browser.callback(back, bastion=victim))
        await victim.get("/api/v1/auth/providers/first/start?mode=api")  # the victim's own, different cookie
        _refused(await browser.callback(back, bastion=victim))
    assert await _users(harness) == []
    assert await _reasons(harness) == ["browser", "state"]
    assert exchange_code(await browser.callback(back))  # the browser that started it still can


async def test_an_error_response_from_the_provider_is_refused(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    """RFC 6749 §4.1.2.1: the user said no at the provider (``error=access_denied``): nothing is exchanged."""
    browser: Browser = browser_for(new_account_id())
    state = query_of(await browser.start())["state"]
    denied = f"{callback_url('first')}?error=access_denied&state={state}&iss={upstream['first'].issuer}"
    _refused(await browser.callback(denied))
    assert await _reasons(harness) == ["provider_error"]


async def test_a_disabled_account_cannot_sign_in_with_its_provider(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    browser: Browser = browser_for(account)
    assert (await _exchange(harness, exchange_code(await browser.sign_in()))).status_code == 200
    [user] = await _users(harness)
    admin = await harness.admin()
    assert harness.admin_client is not None
    disabled = await harness.admin_client.patch(
        f"/admin/api/v1/users/{user.id}", json={"disabled": True}, headers=harness.bearer(admin)
    )
    assert disabled.status_code == 200, disabled.text
    _refused(await browser.sign_in())
    assert await _reasons(harness) == ["disabled"]


async def test_wrong_nonce_is_refused(harness: Harness, upstream: dict[str, Upstream], browser_for: Any) -> None:
    """V10.5.1: the attacker replaces ``nonce`` in the authorization request; oidc-provider puts that
    nonce in its (genuinely signed) ID token, which is not the one Bastion's flow holds."""
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    browser: Browser = browser_for(account)
    authorize = await browser.start()
    back = await browser.at_provider(with_query(authorize, nonce="attacker-chosen-nonce-value"))
    _refused(await browser.callback(back))
    assert await _reasons(harness) == ["nonce"]
    assert await _users(harness) == []
    assert await _identities(harness) == []


async def test_mix_up_response_from_the_other_provider_is_refused(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    """V10.2.2 (RFC 9207 §2.4): the flow was started with ``first``, but the response on first's callback
    comes from ``second`` (its ``iss``). Refused before any code is sent anywhere; without the ``iss``
    parameter too, since first's metadata promises it."""
    account = new_account_id()
    for provider in upstream.values():
        provider.add_account(account, email=f"{account}@example.com")
    browser: Browser = browser_for(account)
    authorize = await browser.start("first")
    params = query_of(authorize)
    elsewhere = httpx.URL(upstream["second"].issuer + "/auth").copy_merge_params(params)
    back = await browser.at_provider(str(elsewhere))
    assert query_of(back)["iss"] == upstream["second"].issuer
    _refused(await browser.callback(back))

    second_try = await browser.at_provider(
        str(httpx.URL(upstream["second"].issuer + "/auth").copy_merge_params(query_of(await browser.start("first"))))
    )
    _refused(await browser.callback(with_query(second_try, iss=None)))
    assert await _users(harness) == []
    assert await _reasons(harness) == ["iss", "iss"]


@pytest.mark.parametrize(
    ("claims", "check"),
    [
        pytest.param({"aud": "someone-else"}, "aud", id="wrong-aud"),
        pytest.param({"aud": ["bastion", "someone-else"]}, "azp", id="two-audiences-without-azp"),
        pytest.param({"aud": ["bastion", "someone-else"], "azp": "someone-else"}, "azp", id="azp-not-ours"),
        pytest.param({"iss": "https://evil.example"}, "iss", id="wrong-iss-in-token"),
        pytest.param({"nonce": "another-flows-nonce"}, "nonce", id="wrong-nonce-in-token"),
        pytest.param({"iat": 4_000_000_000}, "signature_or_times", id="issued-in-the-future"),
    ],
)
async def test_id_token_claims_from_a_misbehaving_provider_are_refused(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any, claims: dict[str, Any], check: str
) -> None:
    """V10.5.4 aud; OpenID Core §3.1.3.7 azp and iss. provider.js's test-only /__test/mutate re-signs the
    ID token with the provider's real signing key, so the signature is valid and only the claim checks refuse."""
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    browser: Browser = browser_for(account)
    back = await browser.at_provider(await browser.start())
    upstream["first"].mutate_next_id_token(**claims)
    _refused(await browser.callback(back))
    assert await _reasons(harness) == [check]
    assert await _users(harness) == []


async def test_several_audiences_with_our_azp_are_accepted(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    """The control of the test above: the same mutation mechanism, with claims OpenID Core allows."""
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    browser: Browser = browser_for(account)
    back = await browser.at_provider(await browser.start())
    upstream["first"].mutate_next_id_token(aud=["bastion", "someone-else"], azp="bastion")
    assert (await _exchange(harness, exchange_code(await browser.callback(back)))).status_code == 200


async def test_expired_id_token_is_refused(harness: Harness, upstream: dict[str, Upstream], browser_for: Any) -> None:
    """V9.2.1: a real ID token (60 s here) presented when Bastion's clock is past its exp and the leeway."""
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    browser: Browser = browser_for(account)
    back = await browser.at_provider(await browser.start())
    # Issued before this line: exp <= real now + 60, so exp + 60 s of leeway < real now + 125.
    harness.clock.at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=125)
    _refused(await browser.callback(back))
    assert await _reasons(harness) == ["signature_or_times"]
    assert await _users(harness) == []


async def test_unverified_email_makes_no_account(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com", email_verified=False)
    response = await browser_for(account).sign_in()
    assert response.status_code == 403
    assert "link" in response.json()["detail"]
    assert await _reasons(harness) == ["unverified_email"]
    assert await _users(harness) == []
    assert await _identities(harness) == []


async def test_email_of_an_existing_account_neither_links_nor_signs_in(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    """No pre-account takeover: an address match never links, whoever's the provider account is."""
    account = new_account_id()
    owner = await harness.user(f"{account}@example.com")
    upstream["first"].add_account(account, email=f"{account}@example.com")
    response = await browser_for(account).sign_in()
    assert response.status_code == 403
    assert "sign in" in response.json()["detail"]
    assert "data-code" not in response.text
    assert await _identities(harness) == []
    assert [user.id for user in await _users(harness)] == [owner.id]
    events = await _rows(harness, select(AuditEvent).where(AuditEvent.tag == "oauth:provider:sign_in"))
    assert [(event.outcome, event.details["reason"]) for event in events] == [("denied", "email_taken")]


async def _link(harness: Harness, tokens: dict[str, Any], browser: Browser, name: str = "first") -> httpx.Response:
    started = await harness.client.post(
        f"/api/v1/me/identities/{name}/link", json={"password": PASSWORD}, headers=harness.bearer(tokens)
    )
    assert started.status_code == 200, started.text
    url = started.json()["url"]
    assert url.startswith("https://127.0.0.1:8443/api/v1/auth/providers/first/start?")
    parts = httpx.URL(url)
    response = await harness.client.get(f"{parts.path}?{parts.query.decode()}")
    assert response.status_code == 302, response.text
    # The link URL is single-use: a second browser opening it gets nothing.
    assert (await harness.client.get(f"{parts.path}?{parts.query.decode()}")).status_code == 400
    return await browser.callback(await browser.at_provider(response.headers["location"]))


async def test_linking_from_a_signed_in_session_then_signing_in_with_it(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    """Linking is done only from a signed-in session; the provider account then signs in to that account,
    even though its address differs from the account's."""
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@elsewhere.example")
    owner = await harness.user(f"{account}@example.com")
    tokens = await harness.sign_in(owner)
    browser: Browser = browser_for(account)
    page = await _link(harness, tokens, browser)
    assert page.status_code == 200, page.text
    assert "data-code" not in page.text

    listed = await harness.client.get("/api/v1/me/identities", headers=harness.bearer(tokens))
    [identity] = listed.json()["identities"]
    assert (identity["provider"], identity["issuer"]) == ("first", upstream["first"].issuer)

    signed_in = await _exchange(harness, exchange_code(await browser.sign_in()))
    assert await _signed_in_email(harness, signed_in.json()) == f"{account}@example.com"
    events = await _rows(harness, select(AuditEvent).where(AuditEvent.tag == "oauth:identity:link"))
    assert [event.actor_id for event in events] == [owner.id]


async def test_an_identity_linked_to_one_account_is_not_linked_to_another(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    browser: Browser = browser_for(account)
    assert (await _exchange(harness, exchange_code(await browser.sign_in()))).status_code == 200
    other = await harness.sign_in(await harness.user(f"other-{account}@example.com"))
    assert (await _link(harness, other, browser)).status_code == 400
    assert len(await _identities(harness)) == 1


async def test_link_needs_a_session_and_the_password(harness: Harness) -> None:
    """A stolen access token alone cannot add the thief's provider account as a way in (V6.3 re-authentication)."""
    assert (await harness.client.post("/api/v1/me/identities/first/link", json={})).status_code == 401
    user = await harness.user("owner@example.com")
    tokens = await harness.sign_in(user)
    for body in ({}, {"password": "not the password"}):
        refused = await harness.client.post(
            "/api/v1/me/identities/first/link", json=body, headers=harness.bearer(tokens)
        )
        assert refused.status_code == 401
    [counted] = await _rows(harness, select(User.failed_logins).where(User.id == user.id))
    assert counted == (1,)
    assert await _rows(harness, select(ProviderFlow)) == []
    granted = await harness.client.post(
        "/api/v1/me/identities/first/link", json={"password": PASSWORD}, headers=harness.bearer(tokens)
    )
    assert granted.status_code == 200


async def test_unlink(harness: Harness, upstream: dict[str, Upstream], browser_for: Any) -> None:
    """Unlinking ends that way in; the last way into an account without a password is kept (409)."""
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@elsewhere.example")
    owner = await harness.user(f"{account}@example.com")
    tokens = await harness.sign_in(owner)
    browser: Browser = browser_for(account)
    await _link(harness, tokens, browser)
    [identity] = (await harness.client.get("/api/v1/me/identities", headers=harness.bearer(tokens))).json()[
        "identities"
    ]
    someone = await harness.signed_in(f"someone-{account}@example.com")
    path = f"/api/v1/me/identities/{identity['id']}"
    assert (await harness.client.delete(path, headers=harness.bearer(someone))).status_code == 404
    assert (await harness.client.delete(path, headers=harness.bearer(tokens))).status_code == 204
    assert (await harness.client.delete(path, headers=harness.bearer(tokens))).status_code == 404
    assert await _identities(harness) == []
    # The provider account is now a stranger, and its address matches no account: it makes a new one.
    new = await _exchange(harness, exchange_code(await browser.sign_in()))
    assert await _signed_in_email(harness, new.json()) == f"{account}@elsewhere.example"
    [identity] = (await harness.client.get("/api/v1/me/identities", headers=harness.bearer(new.json()))).json()[
        "identities"
    ]
    # That account has no password: its only identity stays.
    last = await harness.client.delete(f"/api/v1/me/identities/{identity['id']}", headers=harness.bearer(new.json()))
    assert last.status_code == 409
    events = await _rows(harness, select(AuditEvent).where(AuditEvent.tag == "oauth:identity:unlink"))
    assert [event.actor_id for event in events] == [owner.id]


async def test_exchange_code_is_single_use_under_concurrency(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    """Ten concurrent exchanges of one code: exactly one session."""
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    code = exchange_code(await browser_for(account).sign_in())
    answers = await asyncio.gather(*(_exchange(harness, code) for _ in range(10)))
    assert sorted(answer.status_code for answer in answers) == [200] + [400] * 9
    assert (await _exchange(harness, code)).status_code == 400


async def test_a_callback_is_spent_once_under_concurrency(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    """V10.1.2: ten concurrent callbacks of one response (one browser): exactly one completes."""
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    browser: Browser = browser_for(account)
    back = await browser.at_provider(await browser.start())
    answers = await asyncio.gather(*(browser.callback(back) for _ in range(10)))
    assert sorted(answer.status_code for answer in answers) == [200] + [400] * 9
    assert len(await _users(harness)) == 1


async def test_a_link_url_is_bound_to_one_browser_under_concurrency(
    harness: Harness, upstream: dict[str, Upstream]
) -> None:
    tokens = await harness.signed_in(f"{new_account_id()}@example.com")
    started = await harness.client.post(
        "/api/v1/me/identities/first/link", json={"password": PASSWORD}, headers=harness.bearer(tokens)
    )
    url = httpx.URL(started.json()["url"])
    answers = await asyncio.gather(*(harness.client.get(f"{url.path}?{url.query.decode()}") for _ in range(10)))
    assert sorted(answer.status_code for answer in answers) == [302] + [400] * 9


async def test_exchange_code_is_short_lived(harness: Harness, upstream: dict[str, Upstream], browser_for: Any) -> None:
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@example.com")
    code = exchange_code(await browser_for(account).sign_in())
    harness.clock.advance(seconds=EXCHANGE_TTL)
    assert (await _exchange(harness, code)).status_code == 400
    assert (await _exchange(harness, "not-a-code")).status_code == 400


async def test_account_with_totp_gets_the_second_factor_step(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any
) -> None:
    """A provider sign-in does not skip the account's own second factor (as /auth/login does not)."""
    account = new_account_id()
    upstream["first"].add_account(account, email=f"{account}@elsewhere.example")
    secret, _ = await harness.with_totp(f"{account}@example.com")
    challenge = await harness.login(f"{account}@example.com")
    second = {"mfa_token": challenge["mfa_token"], "code": harness.totp(secret)}
    tokens = (await harness.client.post("/api/v1/auth/mfa", json=second)).json()
    browser: Browser = browser_for(account)
    assert (await _link(harness, tokens, browser)).status_code == 200
    answer = await _exchange(harness, exchange_code(await browser.sign_in()))
    assert answer.status_code == 200
    assert answer.json()["mfa_required"] is True
    assert "access_token" not in answer.json()


def test_prod_refuses_plain_http_providers(tmp_path: Any) -> None:
    """Plain http to a provider only in dev, and only to loopback."""
    provider = {"name": "up", "issuer": "http://127.0.0.1:9000", "client_id": "bastion"}
    assert load_settings(tmp_path, oauth={"providers": [provider]}).oauth.providers[0].issuer
    with pytest.raises(ConfigError, match="https"):
        load_settings(tmp_path, mode="prod", oauth={"providers": [provider]})
    with pytest.raises(ConfigError, match="https"):
        load_settings(tmp_path, oauth={"providers": [{**provider, "issuer": "http://provider.example"}]})
    secure = {**provider, "issuer": "https://accounts.example"}
    assert load_settings(tmp_path, mode="prod", oauth={"providers": [secure]}).oauth.providers[0].issuer
    plain = {
        **secure,
        "kind": "oauth2",
        "authorization_endpoint": "https://accounts.example/authorize",
        "token_endpoint": "https://accounts.example/token",
        "userinfo_endpoint": "http://accounts.example/me",
    }
    with pytest.raises(ConfigError, match="https"):
        load_settings(tmp_path, mode="prod", oauth={"providers": [plain]})
    with pytest.raises(ConfigError, match="same name"):
        load_settings(tmp_path, oauth={"providers": [secure, secure]})


async def test_discovery_issuer_must_match_exactly(harness: Harness) -> None:
    """V10.5.3 (OpenID Discovery §4.3): metadata whose issuer is not the configured one is not used."""
    assert (await harness.client.get("/api/v1/auth/providers/impostor/start")).status_code == 502


@pytest.mark.parametrize("log_format", ["json", "console"])
async def test_no_secret_of_a_provider_sign_in_reaches_the_log(
    harness: Harness, upstream: dict[str, Upstream], browser_for: Any, log_format: LogFormat
) -> None:
    """V16.2.5, the planted-secret test for these flows: the client secret, the provider's code, state,
    the exchange code and the tokens stay out of every log line (Bastion's own and its httpx client's)."""
    captured = io.StringIO()
    configure_logging("debug", log_format=log_format, stream=captured)
    try:
        account = new_account_id()
        upstream["first"].add_account(account, email=f"{account}@example.com")
        browser: Browser = browser_for(account)
        back = await browser.at_provider(await browser.start())
        planted = [CLIENT_SECRET, query_of(back)["code"], query_of(back)["state"]]
        _refused(await browser.callback(with_query(back, state="forged-state-value-of-some-length")))
        code = exchange_code(await browser.callback(back))
        tokens = (await _exchange(harness, code)).json()
        planted += [code, tokens["access_token"], tokens["refresh_token"]]
        started = await harness.client.post(
            "/api/v1/me/identities/second/link", json={"password": "unused"}, headers=harness.bearer(tokens)
        )
        planted.append(query_of(started.json()["url"])["link"])
        await _exchange(harness, code)  # a replay, refused
    finally:
        configure_logging("info")
    log = captured.getvalue()
    assert "oauth:provider:sign_in" in log  # the log did see the flows
    for secret in planted:
        assert secret not in log, f"a planted secret of length {len(secret)} reached the log"
