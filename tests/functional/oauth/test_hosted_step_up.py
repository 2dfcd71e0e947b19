"""The hosted sign-in page honours a detection rule's step-up and
password-reset requirement (it is no way around them), and a rule's
revoke_sessions ends the account's OAuth grants too."""

from __future__ import annotations

import datetime as dt
import re
import uuid

from sqlalchemy import select

from bastion.audit.models import AuditEvent
from bastion.monitor.signals import Fired, Signal
from bastion.oauth.models import BrowserSession

# At module level: this directory's conftest is the module named "conftest"
# only while this file is collected; a later import would find another's.
from conftest import token_request
from factories.hosted import Browser, add_client, authorize_query, forms_of, pkce
from factories.oauth import REDIRECT_URI, VERIFIER, create_client, create_code
from harness import PASSWORD, Harness

ALICE = "alice@example.com"


def fired(account: uuid.UUID, action: str) -> Fired:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    signal = Signal(at=now, tag="auth:login", outcome="failure", account_id=account, address="203.0.113.5")
    return Fired(
        rule="brute-force-account", severity="medium", group_key=f"account:{account}", count=10,
        window_seconds=600.0, first_seen=now, last_seen=now, actions=(action,), signal=signal,
    )  # fmt: skip


async def test_the_hosted_page_asks_the_mailed_code_and_opens_no_mfa_session(harness: Harness) -> None:
    """The step-up applies on /oauth2/sign-in too; the code goes in the second-factor
    field; the browser session it opens is a password one (amr ["pwd"], not MFA)."""
    user = await harness.user(ALICE)
    await harness.app.state.responder.act(fired(user.id, "require_step_up"))
    client_id = await add_client(harness.app)
    _, challenge = pkce()
    browser = Browser(harness.client)
    page = await browser.start(authorize_query(client_id, challenge))
    second = await browser.submit(page, "sign-in", email=ALICE, password=PASSWORD)
    assert second.status_code == 200
    assert "second-factor" in forms_of(second.text)
    mail = (await harness.mails(ALICE))[-1]
    code = re.search(r"^\s+(\d{6})$", mail.get_content(), re.MULTILINE)
    assert code is not None
    wrong = await browser.submit(second, "second-factor", code="000000" if code[1] != "000000" else "111111")
    assert wrong.status_code == 401
    right = await browser.follow(await browser.submit(wrong, "second-factor", code=code[1]))
    assert "consent" in forms_of(right.text)
    [stored] = await harness.app.state.db.all(select(BrowserSession))
    assert stored.amr == ["pwd"]


async def test_the_hosted_page_refuses_a_password_that_must_be_reset(harness: Harness) -> None:
    user = await harness.user(ALICE)
    await harness.app.state.responder.act(fired(user.id, "require_password_reset"))
    browser = Browser(harness.client)
    page = await browser.get("/oauth2/sign-in")
    answer = await browser.submit(page, "sign-in", email=ALICE, password=PASSWORD)
    assert answer.status_code == 403
    assert "Choose a new password" in answer.text
    assert "#token=" in (await harness.mails(ALICE))[-1].get_content()


async def test_revoke_sessions_also_ends_the_accounts_oauth_grants(harness: Harness) -> None:
    """A rule's revoke_sessions ends the account's OAuth grants too: the client's
    access token is refused at its next request and its refresh token at the token endpoint."""
    user = await harness.user(ALICE)
    client_id, secret = await create_client(harness.app)
    code = await create_code(harness.app, client_id, user.id, scopes=("openid", "offline_access", "me:read"))
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": VERIFIER}
    tokens = (await token_request(harness, client_id, secret, form)).json()
    bearer = {"authorization": f"Bearer {tokens['access_token']}"}
    assert (await harness.client.get("/api/v1/me", headers=bearer)).status_code == 200
    assert await harness.app.state.responder.act(fired(user.id, "revoke_sessions")) == ["revoke_sessions"]
    assert (await harness.client.get("/api/v1/me", headers=bearer)).status_code == 401
    again = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    assert (await token_request(harness, client_id, secret, again)).status_code == 400
    revoked = await harness.app.state.db.all(select(AuditEvent).where(AuditEvent.tag == "oauth:grant_revoke"))
    assert [(e.subject_id, e.details["count"], e.request_id) for e in revoked] == [
        (user.id, 1, "monitor:brute-force-account")
    ]
