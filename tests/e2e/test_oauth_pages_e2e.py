"""The hosted sign-in pages against a real ``bastion serve``: over HTTP/2 with
httpx, and once end to end in Chromium with a password and a TOTP code,
ending at the client's redirect URI with a code, then signing out
(RP-initiated logout) back to the client.

Chromium enforces the page policy, including ``form-action`` on the
redirect that ends each form post (the sign-in and consent pages name the
client's origin), and the ``__Host-`` cookie rules; a violation would leave
the browser on Bastion's page and this test waiting.

ASVS 5.0: V3.4.3 (the page policy in a real browser), V3.3.1 (``__Host-``
cookies accepted by a real browser), V6.3.1 (TOTP on the hosted page),
V10.4.6 (``iss`` and ``state`` in the authorization response).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from e2e.serving import Served, clean_env, free_port, missing_peer, serve

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "tangerine-orbit-cascade-91"
REDIRECT_URI = "https://rp.example/callback"
SIGNED_OUT = "https://rp.example/signed-out"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # RFC 7636 Appendix B
SETTINGS = {
    # Cheap hashing: the browser, not Argon2id, is under test.
    "BASTION_PASSWORDS__MEMORY_COST_KIB": "7168",
    "BASTION_PASSWORDS__TIME_COST": "1",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``bastion serve`` whose issuer is the very address the browser uses (its Origin is checked)."""
    data = tmp_path_factory.mktemp("oauth-pages") / "data"
    port = free_port()
    with serve(data, port=port, **SETTINGS, BASTION_AUTH__PUBLIC_URL=f"https://localhost:{port}") as served:
        yield served


def _create_user(server: Served, email: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "bastion", "user", "create", "--email", email, "--password-stdin", "--verified",
         "--data-dir", str(server.data)],
        input=PASSWORD.encode(), env=clean_env(**SETTINGS), check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def _add_client(server: Served, client_id: str) -> None:
    """The client row, written through Bastion's own data layer (client registration is tested elsewhere)."""
    from sqlalchemy import insert

    from bastion.db import open_database
    from bastion.oauth.models import OAuthClient
    from bastion.settings import load_settings

    async def add() -> None:
        database = open_database(load_settings(server.data).sqlalchemy_url)
        tx = database.begin()
        await tx.execute(
            insert(OAuthClient),
            {
                "id": client_id, "name": "Relying Party", "secret_hash": None, "public": True,
                "first_party": False, "token_endpoint_auth_method": "none", "redirect_uris": [REDIRECT_URI],
                "post_logout_redirect_uris": [SIGNED_OUT], "grant_types": ["authorization_code"],
                "scopes": ["openid", "email"], "jwks": None, "jwks_uri": None, "require_par": False,
                "require_dpop": False, "id_token_alg": "EdDSA", "access_token_alg": "EdDSA",
                "backchannel_logout_uri": None, "claims": {}, "created_at": dt.datetime.now(dt.UTC),
            },
        )  # fmt: skip
        await tx.close(commit=True)
        await database.close()

    # In a thread of its own: Playwright's sync API runs an event loop in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, add()).result()


def _query(client_id: str, state: str) -> str:
    return urlencode(
        {
            "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
            "scope": "openid email", "state": state, "code_challenge": CHALLENGE,
            "code_challenge_method": "S256", "nonce": "n-" + state,
        }
    )  # fmt: skip


def _fields(html: str, form_id: str) -> tuple[str, dict[str, str]]:
    form = re.search(rf'<form id="{form_id}" method="post" action="([^"]+)">(.*?)</form>', html, re.S)
    assert form is not None, html
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form[2]))
    return form[1], fields


def test_sign_in_and_consent_over_http2(server: Served) -> None:
    """The whole flow in forms over HTTP/2: the spine reads form bodies the same way over both."""
    _create_user(server, "h2@example.com")
    _add_client(server, "rp-h2")
    with server.client(http2=True) as client:
        first = client.get("/oauth2/authorize?" + _query("rp-h2", "s-h2"))
        assert first.http_version == "HTTP/2"
        assert first.status_code == 302
        page = client.get(first.headers["location"])
        assert "form-action 'self' https://rp.example" in page.headers["content-security-policy"]
        action, fields = _fields(page.text, "sign-in")
        signed_in = client.post(action, data={**fields, "email": "h2@example.com", "password": PASSWORD})
        assert signed_in.status_code == 303
        assert signed_in.http_version == "HTTP/2"
        consent = client.get(signed_in.headers["location"])
        action, fields = _fields(consent.text, "consent")
        allowed = client.post(action, data={**fields, "decision": "allow"})
        assert allowed.status_code == 303
        location = allowed.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    sent = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert set(sent) == {"code", "state", "iss"}
    assert sent["state"] == "s-h2"
    assert sent["iss"] == server.url


def _enable_totp(server: Served, email: str) -> str:
    from bastion.security import totp_at

    with server.client() as api:
        tokens = api.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
        bearer = {"authorization": f"Bearer {tokens['access_token']}"}
        secret = api.post("/api/v1/me/mfa/totp", headers=bearer).json()["secret"]
        # The previous step's code (inside the ±1 window): the sign-in can then use the current
        # one at once, with no waiting on the real clock for the next step.
        code = totp_at(secret, int(time.time()) // 30 - 1)
        assert api.post("/api/v1/me/mfa/totp/confirm", json={"code": code}, headers=bearer).status_code == 200
    return str(secret)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        missing_peer("Chromium is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


def test_a_browser_signs_in_with_totp_and_lands_on_the_client_with_a_code(server: Served, browser: object) -> None:
    from playwright.sync_api import Browser, expect

    from bastion.security import totp_at

    assert isinstance(browser, Browser)
    _create_user(server, "browser@example.com")
    _add_client(server, "rp-browser")
    secret = _enable_totp(server, "browser@example.com")
    context = browser.new_context(ignore_https_errors=True)  # the dev CA is not in Chromium's store
    landed: list[str] = []

    def relying_party(route: object) -> None:
        from playwright.sync_api import Route

        assert isinstance(route, Route)
        landed.append(route.request.url)
        route.fulfill(status=200, content_type="text/plain", body="relying party")

    context.route("https://rp.example/**", relying_party)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(f"{server.url}/oauth2/authorize?" + _query("rp-browser", "s-browser"))
    expect(page.locator("#sign-in")).to_be_visible()
    page.fill("#email", "browser@example.com")
    page.fill("#password", PASSWORD)
    page.click("#sign-in button")
    expect(page.locator("#second-factor")).to_be_visible()
    page.fill("#code", totp_at(secret, int(time.time()) // 30))
    page.click("#second-factor button")
    expect(page.locator("#consent")).to_be_visible()
    expect(page.locator("#scopes")).to_contain_text("See your email address")
    page.click("#consent button[value=allow]")
    page.wait_for_url("https://rp.example/callback?**")
    cookies = {c["name"]: c for c in context.cookies(server.url)}
    assert cookies["__Host-bastion"]["secure"]
    assert cookies["__Host-bastion"]["httpOnly"]
    assert cookies["__Host-bastion"]["sameSite"] == "Lax"
    # RP-initiated logout: confirmed on Bastion's page, then back at the client with its state.
    logout = urlencode({"client_id": "rp-browser", "post_logout_redirect_uri": SIGNED_OUT, "state": "bye"})
    page.goto(f"{server.url}/oauth2/logout?{logout}")
    page.click("#logout button")
    page.wait_for_url(SIGNED_OUT + "?state=bye")
    assert "__Host-bastion" not in {c["name"] for c in context.cookies(server.url)}
    context.close()
    assert len(landed) == 2
    assert landed[1] == SIGNED_OUT + "?state=bye"
    sent = {k: v[0] for k, v in parse_qs(urlsplit(landed[0]).query).items()}
    assert set(sent) == {"code", "state", "iss"}
    assert sent["state"] == "s-browser"
    assert sent["iss"] == server.url
    assert errors == []
