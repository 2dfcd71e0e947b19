"""``/oauth2/authorize`` (RFC 6749 §4.1.1-§4.1.2, RFC 7636, RFC 9207, OpenID Connect Core §3.1.2),
through the hosted sign-in and consent pages, over the ASGI client.

ASVS 5.0: V10.4.1 (redirect URIs compared exactly against the registered
ones), V10.4.2 (a code is single-use: one row, claimed by the token side),
V10.4.3 (codes live at most a minute), V10.4.4 (no implicit grant),
V10.4.5 (PKCE S256 required), V10.4.6 (``iss`` in the response),
V10.7.1 (consent shown and remembered per client and scopes).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from bastion.audit.models import AuditEvent
from bastion.oauth.models import OAuthCode, OAuthConsent, OAuthPushedRequest
from bastion.security import hash_token
from factories.hosted import REDIRECT_URI, Browser, add_client, authorize_query, forms_of, pkce, query_of
from harness import PASSWORD, Harness

ISSUER = "https://127.0.0.1:8443"


async def rows(harness: Harness, statement: Any) -> list[Any]:
    tx = harness.app.state.db.begin()
    try:
        return list(await tx.all(statement))
    finally:
        await tx.close(commit=False)


async def code_row(harness: Harness, code: str) -> Any:
    found = await rows(harness, select(OAuthCode).where(OAuthCode.code_hash == hash_token(code)))
    assert len(found) == 1
    return found[0]


async def to_code(
    harness: Harness, client_id: str, email: str, *, browser: Browser | None = None, **extra: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Authorize, signing in and consenting as asked: (the query sent, the query of the redirect)."""
    _, challenge = pkce()
    query = authorize_query(client_id, challenge, **extra)
    browser = browser or Browser(harness.client)
    answer = await browser.start(query)
    if "sign-in" in forms_of(answer.text):
        answer = await browser.sign_in(answer, email, PASSWORD)
    if "consent" in forms_of(answer.text):
        answer = await browser.follow(await browser.submit(answer, "consent", decision="allow"))
    assert answer.status_code in (302, 303), answer.text
    assert answer.headers["location"].startswith(REDIRECT_URI + "?")
    return query, query_of(answer.headers["location"])


async def test_sign_in_consent_and_code(harness: Harness) -> None:
    """The whole flow: sign-in page, consent page, a redirect with code, state and iss (V10.4.6)."""
    await harness.user("alice@example.com")
    client_id = await add_client(harness.app)
    query, answer = await to_code(harness, client_id, "alice@example.com", nonce="n-1", dpop_jkt="jkt-1")
    assert set(answer) == {"code", "state", "iss"}
    assert answer["state"] == query["state"]
    assert answer["iss"] == ISSUER
    row = await code_row(harness, answer["code"])
    assert row.client_id == client_id
    assert row.redirect_uri == REDIRECT_URI
    assert row.code_challenge == query["code_challenge"]
    assert row.nonce == "n-1"
    assert row.dpop_jkt == "jkt-1"
    assert row.scopes == ["openid", "email"]
    assert row.amr == ["pwd"]
    assert row.acr == "urn:bastion:pwd"
    assert row.session_id is not None
    assert row.expires_at - row.created_at == dt.timedelta(seconds=harness.settings.oauth.code_ttl)
    assert row.used_at is None
    events = [(e.tag, e.outcome, e.details) for e in await rows(harness, select(AuditEvent))]
    assert ("auth:login", "success", {"mfa": False, "agent": "python-httpx"}) in events
    assert ("oauth:consent", "success", {"client_id": client_id, "scopes": ["openid", "email"]}) in events


async def test_consent_is_remembered_per_client_and_scopes(harness: Harness) -> None:
    user = await harness.user("alice@example.com")
    client_id = await add_client(harness.app)
    browser = Browser(harness.client)
    await to_code(harness, client_id, "alice@example.com", browser=browser)
    consents = await rows(harness, select(OAuthConsent))
    assert [(c.user_id, c.client_id, c.scopes) for c in consents] == [(user.id, client_id, ["openid", "email"])]
    # The same scopes again: straight back to the client, a 302 from the GET, no page.
    _, challenge = pkce()
    again = await harness.client.get("/oauth2/authorize?" + urlencode(authorize_query(client_id, challenge)))
    assert again.status_code == 302
    assert "code" in query_of(again.headers["location"])
    # More scopes than consented: asked again.
    wider = authorize_query(client_id, challenge, scope="openid email profile")
    asked = await browser.start(wider)
    assert "consent" in forms_of(asked.text)
    assert "See your profile" in asked.text
    # prompt=consent asks even when covered.
    forced = await browser.start(authorize_query(client_id, challenge, prompt="consent"))
    assert "consent" in forms_of(forced.text)


async def test_first_party_clients_skip_consent(harness: Harness) -> None:
    await harness.user("alice@example.com")
    client_id = await add_client(harness.app, first_party=True)
    browser = Browser(harness.client)
    _, challenge = pkce()
    page = await browser.start(authorize_query(client_id, challenge))
    answer = await browser.sign_in(page, "alice@example.com", PASSWORD)
    assert answer.status_code == 303
    assert "code" in query_of(answer.headers["location"])
    assert await rows(harness, select(OAuthConsent)) == []


async def test_the_user_can_deny(harness: Harness) -> None:
    await harness.user("alice@example.com")
    client_id = await add_client(harness.app)
    browser = Browser(harness.client)
    _, challenge = pkce()
    query = authorize_query(client_id, challenge)
    page = await browser.sign_in(await browser.start(query), "alice@example.com", PASSWORD)
    denied = await browser.submit(page, "consent", decision="deny")
    assert denied.status_code == 303
    assert query_of(denied.headers["location"]) == {
        "error": "access_denied",
        "error_description": "The user refused.",
        "state": query["state"],
        "iss": ISSUER,
    }
    assert await rows(harness, select(OAuthCode)) == []


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/callback",
        "https://app.example/callback/",
        "https://app.example/callback/more",
        "https://app.example/callbac",
        "https://app.example/callback?x=1",
        "https://app.example:8443/callback",
        "https://app.example/callback#fragment",
        "https://app.example@evil.example/callback",
        "https://app.example.evil.example/callback",
        "http://app.example/callback",
        "HTTPS://APP.EXAMPLE/callback",
        "https://app.example/%63allback",
        "http://127.0.0.1:4000/callback",
    ],
)
async def test_an_unregistered_redirect_uri_gets_a_page_never_a_redirect(harness: Harness, redirect_uri: str) -> None:
    """V10.4.1: exact comparison; the error is shown, not sent anywhere (RFC 6749 §4.1.2.1)."""
    client_id = await add_client(harness.app)
    _, challenge = pkce()
    answer = await harness.client.get(
        "/oauth2/authorize?" + urlencode(authorize_query(client_id, challenge, redirect_uri=redirect_uri))
    )
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert answer.headers["content-type"].startswith("text/html")
    assert "did not register" in answer.text
    assert "evil" not in answer.text


async def test_loopback_redirect_uris_match_on_any_port(harness: Harness) -> None:
    """RFC 8252 §7.3, for native apps; the path must still match."""
    await harness.user("alice@example.com")
    client_id = await add_client(harness.app, redirect_uris=["http://127.0.0.1/callback"], first_party=True)
    _, challenge = pkce()
    good = authorize_query(client_id, challenge, redirect_uri="http://127.0.0.1:51234/callback")
    assert (await harness.client.get("/oauth2/authorize?" + urlencode(good))).status_code == 302
    bad = authorize_query(client_id, challenge, redirect_uri="http://127.0.0.1:51234/other")
    assert (await harness.client.get("/oauth2/authorize?" + urlencode(bad))).status_code == 400


@pytest.mark.parametrize(
    "query",
    [
        "client_id=nobody&redirect_uri=https%3A%2F%2Fapp.example%2Fcallback&response_type=code",
        "response_type=code&redirect_uri=https%3A%2F%2Fapp.example%2Fcallback",
    ],
)
async def test_an_unknown_client_gets_a_page(harness: Harness, query: str) -> None:
    answer = await harness.client.get("/oauth2/authorize?" + query)
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert "not registered" in answer.text


async def test_repeated_parameters_get_a_page(harness: Harness) -> None:
    """RFC 6749 §3.1: a parameter sent twice is an error, and which redirect URI is meant is unknown."""
    client_id = await add_client(harness.app)
    _, challenge = pkce()
    query = urlencode(authorize_query(client_id, challenge)) + "&state=second"
    answer = await harness.client.get("/oauth2/authorize?" + query)
    assert answer.status_code == 400
    assert "location" not in answer.headers
    twice = urlencode(authorize_query(client_id, challenge)) + "&redirect_uri=https%3A%2F%2Fevil.example%2F"
    assert "location" not in (await harness.client.get("/oauth2/authorize?" + twice)).headers


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": ""}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": "code id_token"}, "unsupported_response_type"),
        ({"scope": "openid records:*"}, "invalid_scope"),
        ({"scope": ""}, "invalid_scope"),
        ({"scope": "openid\x7fbad"}, "invalid_scope"),
        ({"prompt": "none login"}, "invalid_request"),
        ({"prompt": "sometimes"}, "invalid_request"),
        ({"max_age": "-1"}, "invalid_request"),
        ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
        ({"response_mode": "fragment"}, "invalid_request"),
        ({"response_mode": "form_post"}, "invalid_request"),
    ],
)
async def test_bad_requests_go_back_with_error_state_and_iss(
    harness: Harness, change: dict[str, str], error: str
) -> None:
    """V10.4.5: PKCE S256 only (plain and missing refused); V10.4.4: no implicit grant."""
    client_id = await add_client(harness.app)
    _, challenge = pkce()
    query = {k: v for k, v in {**authorize_query(client_id, challenge), **change}.items() if v}
    answer = await harness.client.get("/oauth2/authorize?" + urlencode(query))
    assert answer.status_code == 302
    assert answer.headers["location"].startswith(REDIRECT_URI + "?")
    sent = query_of(answer.headers["location"])
    assert sent["error"] == error
    assert sent["state"] == query["state"]
    assert sent["iss"] == ISSUER
    assert "code" not in sent
    assert await rows(harness, select(OAuthPushedRequest)) == []


async def test_prompt_none(harness: Harness) -> None:
    """OpenID Connect Core §3.1.2.6: login_required, then consent_required, then a code, never a page."""
    await harness.user("alice@example.com")
    client_id = await add_client(harness.app)
    _, challenge = pkce()
    silent = authorize_query(client_id, challenge, prompt="none")
    answer = await harness.client.get("/oauth2/authorize?" + urlencode(silent))
    assert query_of(answer.headers["location"])["error"] == "login_required"
    browser = Browser(harness.client)
    first_party = await add_client(harness.app, first_party=True)
    await to_code(harness, first_party, "alice@example.com", browser=browser)  # signs the browser in
    answer = await harness.client.get("/oauth2/authorize?" + urlencode(silent))
    assert query_of(answer.headers["location"])["error"] == "consent_required"
    await to_code(harness, client_id, "alice@example.com", browser=browser)  # consents
    answer = await harness.client.get("/oauth2/authorize?" + urlencode(silent))
    assert answer.status_code == 302
    assert "code" in query_of(answer.headers["location"])


async def test_prompt_login_and_max_age_force_a_new_sign_in(harness: Harness) -> None:
    await harness.user("alice@example.com")
    client_id = await add_client(harness.app, first_party=True)
    browser = Browser(harness.client)
    _, first = await to_code(harness, client_id, "alice@example.com", browser=browser)
    signed_in_at = (await code_row(harness, first["code"])).auth_time
    _, challenge = pkce()
    # A live browser session answers at once…
    quick = await harness.client.get("/oauth2/authorize?" + urlencode(authorize_query(client_id, challenge)))
    assert quick.status_code == 302
    harness.clock.advance(seconds=120)
    # …but prompt=login asks again, and the new code carries the new auth_time.
    forced = await browser.start(authorize_query(client_id, challenge, prompt="login"))
    assert "sign-in" in forms_of(forced.text)
    answer = await browser.sign_in(forced, "alice@example.com", PASSWORD)
    renewed = await code_row(harness, query_of(answer.headers["location"])["code"])
    assert renewed.auth_time == signed_in_at + dt.timedelta(seconds=120)
    # max_age: a sign-in older than it is asked again; a younger one is not.
    harness.clock.advance(seconds=60)
    young = await harness.client.get(
        "/oauth2/authorize?" + urlencode(authorize_query(client_id, challenge, max_age="300"))
    )
    assert young.status_code == 302
    old = await browser.start(authorize_query(client_id, challenge, max_age="30"))
    assert "sign-in" in forms_of(old.text)


async def test_login_hint_fills_the_email_field(harness: Harness) -> None:
    client_id = await add_client(harness.app)
    _, challenge = pkce()
    page = await Browser(harness.client).start(authorize_query(client_id, challenge, login_hint="hint@example.com"))
    assert forms_of(page.text)["sign-in"].fields["email"] == "hint@example.com"


async def test_acr_values_step_up_to_the_second_factor(harness: Harness) -> None:
    """A password-only browser session is asked for the second factor when the client wants urn:bastion:mfa."""
    await harness.register("alice@example.com")
    client_id = await add_client(harness.app, first_party=True)
    browser = Browser(harness.client)
    await to_code(harness, client_id, "alice@example.com", browser=browser)  # password only
    # Alice turns TOTP on from another device.
    tokens = await harness.login("alice@example.com")
    secret = (await harness.client.post("/api/v1/me/mfa/totp", headers=harness.bearer(tokens))).json()["secret"]
    confirmed = await harness.client.post(
        "/api/v1/me/mfa/totp/confirm", json={"code": harness.totp(secret)}, headers=harness.bearer(tokens)
    )
    assert confirmed.status_code == 200
    harness.clock.advance(seconds=30)
    _, challenge = pkce()
    plain = await harness.client.get("/oauth2/authorize?" + urlencode(authorize_query(client_id, challenge)))
    assert plain.status_code == 302  # no step-up asked: the session is fine
    stepped = await browser.start(authorize_query(client_id, challenge, acr_values="urn:bastion:mfa"))
    assert "sign-in" in forms_of(stepped.text)
    answer = await browser.sign_in(stepped, "alice@example.com", PASSWORD, code=harness.totp(secret))
    row = await code_row(harness, query_of(answer.headers["location"])["code"])
    assert row.amr == ["pwd", "otp"]
    assert row.acr == "urn:bastion:mfa"


async def test_acr_values_without_a_second_factor_get_the_password_acr(harness: Harness) -> None:
    """acr_values is a voluntary claim (Core §3.1.2.1): an account without TOTP is not sent round in circles."""
    await harness.user("alice@example.com")
    client_id = await add_client(harness.app, first_party=True)
    _, answer = await to_code(harness, client_id, "alice@example.com", acr_values="urn:bastion:mfa")
    assert (await code_row(harness, answer["code"])).acr == "urn:bastion:pwd"


async def test_prompt_login_in_the_same_instant_still_asks(harness: Harness) -> None:
    """A sign-in made before the request, even in the same second, does not satisfy prompt=login."""
    await harness.user("alice@example.com")
    client_id = await add_client(harness.app, first_party=True)
    browser = Browser(harness.client)
    await to_code(harness, client_id, "alice@example.com", browser=browser)
    harness.clock.advance(seconds=0.001)
    _, challenge = pkce()
    forced = await browser.start(authorize_query(client_id, challenge, prompt="login"))
    assert "sign-in" in forms_of(forced.text)


async def test_par_is_required_when_the_client_says_so(harness: Harness) -> None:
    """RFC 9126 §5: require_par refuses a plain request; a pushed one replaces the query and is used once."""
    await harness.user("alice@example.com")
    client_id = await add_client(harness.app, require_par=True, first_party=True)
    _, challenge = pkce()
    plain = await harness.client.get("/oauth2/authorize?" + urlencode(authorize_query(client_id, challenge)))
    assert query_of(plain.headers["location"])["error"] == "invalid_request"
    request_uri = "urn:ietf:params:oauth:request_uri:test-" + hash_token(client_id)[:16]
    pushed = {k: v for k, v in authorize_query(client_id, challenge, nonce="pushed").items() if k != "client_id"}
    tx = harness.app.state.db.begin()
    await tx.execute(
        OAuthPushedRequest.__table__.insert(),
        {
            "uri_hash": hash_token(request_uri),
            "client_id": client_id,
            "parameters": pushed,
            "expires_at": harness.clock.now() + dt.timedelta(seconds=60),
        },
    )
    await tx.close(commit=True)
    browser = Browser(harness.client)
    query = {"client_id": client_id, "request_uri": request_uri}
    page = await browser.start(query)
    answer = await browser.sign_in(page, "alice@example.com", PASSWORD)
    sent = query_of(answer.headers["location"])
    assert sent["state"] == pushed["state"]
    assert (await code_row(harness, sent["code"])).nonce == "pushed"
    # Used once.
    again = await harness.client.get("/oauth2/authorize?" + urlencode(query))
    assert again.status_code == 400
    assert "location" not in again.headers


async def test_post_to_the_authorization_endpoint(harness: Harness) -> None:
    """OpenID Connect Core §3.1.2.1: POST with a form works as GET does, answered with 303."""
    await harness.user("alice@example.com")
    client_id = await add_client(harness.app, first_party=True)
    browser = Browser(harness.client)
    await to_code(harness, client_id, "alice@example.com", browser=browser)
    _, challenge = pkce()
    answer = await harness.client.post("/oauth2/authorize", data=authorize_query(client_id, challenge))
    assert answer.status_code == 303
    assert "code" in query_of(answer.headers["location"])


async def test_a_pending_request_gives_one_code_however_many_race(harness: Harness) -> None:
    """V10.4.2: ten consents posted at once for one request: exactly one code."""
    await harness.user("alice@example.com")
    client_id = await add_client(harness.app)
    browser = Browser(harness.client)
    _, challenge = pkce()
    page = await browser.sign_in(
        await browser.start(authorize_query(client_id, challenge)), "alice@example.com", PASSWORD
    )
    answers = await asyncio.gather(*(browser.submit(page, "consent", decision="allow") for _ in range(10)))
    codes = [a for a in answers if a.status_code == 303 and "code=" in a.headers["location"]]
    assert len(codes) == 1
    assert all(a.status_code == 400 for a in answers if a not in codes)
    assert len(await rows(harness, select(OAuthCode))) == 1
