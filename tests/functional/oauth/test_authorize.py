"""``/oauth2/authorize`` (RFC 6749 §4.1.1-§4.1.2, RFC 7636, RFC 9207, OpenID Connect Core §3.1.2),
through the hosted sign-in and consent pages, over the ASGI client.

ASVS 5.0: V10.4.1 (redirect URIs compared exactly against the registered
ones), V10.4.2 (a code is single-use: one row, claimed by the token side),
V10.4.3 (codes live at most a minute), V10.4.4 (no implicit grant),
V10.4.5 (PKCE S256 required), V10.4.6 (``iss`` in the response),
V10.7.1 (consent shown and remembered per client and scopes).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from bastion.oauth.models import OAuthCode
from bastion.security import hash_token
from factories.hosted import REDIRECT_URI, Browser, add_client, authorize_query, forms_of, pkce, query_of
from harness import PASSWORD, Harness

ISSUER = "https://127.0.0.1:8443"


async def _codes(harness: Harness) -> list[OAuthCode]:
    async with harness.app.state.db.begin() as tx:  # type: ignore[attr-defined]
        return list(await tx.all(select(OAuthCode)))


async def _code_row(harness: Harness, code: str) -> object:
    database = harness.app.state.db
    tx = database.begin()
    try:
        return await tx.one(select(OAuthCode).where(OAuthCode.code_hash == hash_token(code)))
    finally:
        await tx.close(commit=False)


async def _signed_in_to_code(
    harness: Harness, client_id: str, email: str, **extra: str
) -> tuple[dict[str, str], dict[str, str]]:
    _, challenge = pkce()
    query = authorize_query(client_id, challenge, **extra)
    browser = Browser(harness.client)
    page = await browser.start(query)
    assert page.status_code == 200 and "sign-in" in forms_of(page.text), page.text
    answer = await browser.sign_in(page, email, PASSWORD)
    if "consent" in forms_of(answer.text):
        answer = await browser.follow(await browser.submit(answer, "consent", decision="allow"))
    assert answer.status_code in (302, 303), answer.text
    assert answer.headers["location"].startswith(REDIRECT_URI + "?")
    return query, query_of(answer.headers["location"])


async def test_sign_in_consent_and_code(harness: Harness) -> None:
    """The whole flow: sign-in page, consent page, a redirect with code, state and iss."""
    await harness.user("alice@example.com")
    client_id = await add_client(harness.app)
    query, answer = await _signed_in_to_code(harness, client_id, "alice@example.com", nonce="n-1")
    assert set(answer) == {"code", "state", "iss"}
    assert answer["state"] == query["state"]
    assert answer["iss"] == ISSUER
    row = await _code_row(harness, answer["code"])
    assert row is not None
    assert row.client_id == client_id and row.redirect_uri == REDIRECT_URI
    assert row.code_challenge == query["code_challenge"]
    assert row.nonce == "n-1"
    assert row.scopes == ["openid", "email"]
    assert row.amr == ["pwd"] and row.acr == "urn:bastion:pwd"
    assert row.session_id is not None
    assert (row.expires_at - row.created_at) == dt.timedelta(seconds=harness.settings.oauth.code_ttl)
    assert row.used_at is None
