"""``/oauth2/logout``: OpenID RP-Initiated Logout 1.0 and Back-Channel Logout 1.0.

ASVS 5.0: V7.4.1 (logout ends the session on the server, and its tokens),
V7.4.3 (the clients are told, back-channel), V3.5.1 (the confirmation is
CSRF-protected), V10.4.1 (post_logout_redirect_uri compared exactly).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
from sqlalchemy import insert, select
from test_authorize import rows, to_code

from bastion.audit.models import AuditEvent
from bastion.oauth.models import BrowserSession, OAuthGrant
from bastion.sessions.models import Session
from factories.hosted import Browser, add_client, forms_of, query_of
from harness import Harness

SIGNED_OUT = "https://app.example/signed-out"


async def _signed_in(harness: Harness, **client: Any) -> tuple[str, Browser]:
    await harness.user("alice@example.com")
    client_id = await add_client(harness.app, first_party=True, **client)
    browser = Browser(harness.client)
    await to_code(harness, client_id, "alice@example.com", browser=browser)
    return client_id, browser


async def test_logout_asks_then_ends_the_browser_session_and_its_session(harness: Harness) -> None:
    client_id, browser = await _signed_in(harness)
    (before,) = await rows(harness, select(BrowserSession))
    query = {"client_id": client_id, "post_logout_redirect_uri": SIGNED_OUT, "state": "bye-1"}
    page = await browser.get("/oauth2/logout?" + urlencode(query))
    assert page.status_code == 200
    assert "logout" in forms_of(page.text)
    assert "form-action 'self' https://app.example" in page.headers["content-security-policy"]
    # Nothing has ended yet: logging out needs the user's confirmation.
    assert len(await rows(harness, select(BrowserSession))) == 1
    done = await browser.submit(page, "logout")
    assert done.status_code == 303
    assert done.headers["location"] == SIGNED_OUT + "?state=bye-1"
    assert "__Host-bastion=" in done.headers.get("set-cookie", "")  # cleared
    assert await rows(harness, select(BrowserSession)) == []
    (session,) = await rows(harness, select(Session).where(Session.id == before.session_id))
    assert session.revoked_at is not None
    assert session.revoke_reason == "logout"
    tags = [e.tag for e in await rows(harness, select(AuditEvent))]
    assert "oauth:logout" in tags
    assert "auth:session:revoke" in tags
    # The browser is signed out: the next authorization asks again.
    again = await harness.client.get("/oauth2/logout")
    assert "logout" not in forms_of(again.text)


async def test_logout_without_a_client_shows_a_page(harness: Harness) -> None:
    _, browser = await _signed_in(harness)
    page = await browser.get("/oauth2/logout")
    done = await browser.submit(page, "logout")
    assert done.status_code == 200
    assert "You are signed out" in done.text


@pytest.mark.parametrize(
    "uri",
    [
        "https://evil.example/",
        SIGNED_OUT + "/x",
        SIGNED_OUT + "?next=https://evil.example",
        "https://app.example/callback",  # a redirect URI, not a post-logout one
    ],
)
async def test_an_unregistered_post_logout_redirect_uri_gets_a_page(harness: Harness, uri: str) -> None:
    client_id, browser = await _signed_in(harness)
    page = await browser.get("/oauth2/logout?" + urlencode({"client_id": client_id, "post_logout_redirect_uri": uri}))
    assert page.status_code == 400
    assert "location" not in page.headers
    assert len(await rows(harness, select(BrowserSession))) == 1
    # Nor can the confirmation form be posted with it.
    confirm = await browser.get("/oauth2/logout?" + urlencode({"client_id": client_id}))
    forged = {**forms_of(confirm.text)["logout"].fields, "post_logout_redirect_uri": uri}
    answer = await harness.client.post("/oauth2/logout/confirm", data=forged)
    assert answer.status_code == 400
    assert "location" not in answer.headers


async def test_a_redirect_without_a_client_is_refused(harness: Harness) -> None:
    _, browser = await _signed_in(harness)
    page = await browser.get("/oauth2/logout?" + urlencode({"post_logout_redirect_uri": SIGNED_OUT}))
    assert page.status_code == 400


async def test_a_forged_id_token_hint_is_refused(harness: Harness) -> None:
    client_id, browser = await _signed_in(harness)
    forged = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4IiwiYXVkIjoiYyJ9."
    page = await browser.get("/oauth2/logout?" + urlencode({"id_token_hint": forged, "client_id": client_id}))
    assert page.status_code == 400


@pytest.mark.parametrize("token", [None, "f" * 64])
async def test_a_forged_logout_is_refused(harness: Harness, token: str | None) -> None:
    """V3.5.1: a cross-site page cannot sign the user out."""
    _, browser = await _signed_in(harness)
    page = await browser.get("/oauth2/logout")
    fields = {**forms_of(page.text)["logout"].fields, "decision": "logout"}
    if token is None:
        del fields["csrf_token"]
    else:
        fields["csrf_token"] = token
    answer = await harness.client.post("/oauth2/logout/confirm", data=fields)
    assert answer.status_code == 403
    assert len(await rows(harness, select(BrowserSession))) == 1
    cross = await harness.client.post(
        "/oauth2/logout/confirm",
        data=forms_of(page.text)["logout"].fields,
        headers={"sec-fetch-site": "cross-site"},
    )
    assert cross.status_code == 403


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, list[str]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append(parse_qs(body.decode()) | {"_type": [self.headers["content-type"]]})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, list[str]]]]]:
    received: list[dict[str, list[str]]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/backchannel", received
    server.shutdown()
    server.server_close()


async def test_back_channel_logout_tells_the_clients_of_that_session(
    harness: Harness, receiver: tuple[str, list[dict[str, list[str]]]]
) -> None:
    """Back-Channel Logout 1.0 §2.4-§2.5: a logout token to each client with a grant of the session."""
    signer = harness.app.state.oauth.signer
    uri, received = receiver
    client_id, browser = await _signed_in(harness, backchannel_logout_uri=uri)
    quiet = await add_client(harness.app, first_party=True)  # registered no back-channel URI
    (browser_row,) = await rows(harness, select(BrowserSession))
    now = harness.clock.now()
    tx = harness.app.state.db.begin()
    for cid in (client_id, quiet):
        await tx.execute(
            insert(OAuthGrant),
            {
                "id": uuid.uuid4(), "client_id": cid, "user_id": browser_row.user_id,
                "session_id": browser_row.session_id, "scopes": ["openid"], "amr": ["pwd"],
                "created_at": now, "expires_at": now + dt.timedelta(days=1),
            },
        )  # fmt: skip
    await tx.close(commit=True)
    page = await browser.get("/oauth2/logout")
    await browser.submit(page, "logout")
    assert len(received) == 1
    assert received[0]["_type"] == ["application/x-www-form-urlencoded"]
    token = received[0]["logout_token"][0]
    claims = signer.verify(token, now=int(harness.clock.now().timestamp()), typ="logout+jwt", audience=client_id)
    assert claims["sub"] == str(browser_row.user_id)
    assert claims["sid"] == str(browser_row.session_id)
    assert claims["events"] == {"http://schemas.openid.net/event/backchannel-logout": {}}
    assert "nonce" not in claims
    assert claims["exp"] - claims["iat"] <= 120
    assert claims["jti"]
    grants = await rows(harness, select(OAuthGrant))
    assert all(g.revoked_at is not None for g in grants)
    assert {g.revoke_reason for g in grants} == {"logout"}
    json.dumps(claims)


async def test_a_client_that_does_not_answer_does_not_stop_the_logout(harness: Harness) -> None:
    """§2.7: failures are logged; the logout stands."""
    client_id, browser = await _signed_in(harness, backchannel_logout_uri="http://127.0.0.1:9/unreachable")
    (browser_row,) = await rows(harness, select(BrowserSession))
    now = harness.clock.now()
    tx = harness.app.state.db.begin()
    await tx.execute(
        insert(OAuthGrant),
        {
            "id": uuid.uuid4(), "client_id": client_id, "user_id": browser_row.user_id,
            "session_id": browser_row.session_id, "scopes": ["openid"], "amr": ["pwd"],
            "created_at": now, "expires_at": now + dt.timedelta(days=1),
        },
    )  # fmt: skip
    await tx.close(commit=True)
    page = await browser.get(
        "/oauth2/logout?" + urlencode({"client_id": client_id, "post_logout_redirect_uri": SIGNED_OUT})
    )
    done = await browser.submit(page, "logout")
    assert done.status_code == 303
    assert query_of(done.headers["location"]) == {}
    assert await rows(harness, select(BrowserSession)) == []


def _typed_signer(harness: Harness) -> Any:
    return harness.app.state.oauth.signer


async def test_an_id_token_hint_names_the_client(harness: Harness) -> None:
    """RP-Initiated §2: the hint's aud is the client; its post_logout_redirect_uri is then honoured."""
    signer = _typed_signer(harness)
    client_id, browser = await _signed_in(harness)
    (row,) = await rows(harness, select(BrowserSession))
    now = int(harness.clock.now().timestamp())
    hint = signer.sign({"sub": str(row.user_id)}, now=now, ttl_seconds=600, typ="JWT", audience=client_id)
    page = await browser.get(
        "/oauth2/logout?" + urlencode({"id_token_hint": hint, "post_logout_redirect_uri": SIGNED_OUT, "state": "s"})
    )
    assert page.status_code == 200
    done = await browser.submit(page, "logout")
    assert done.headers["location"] == SIGNED_OUT + "?state=s"


async def test_a_hint_that_is_not_an_id_token_or_for_another_client_is_refused(harness: Harness) -> None:
    signer = _typed_signer(harness)
    client_id, browser = await _signed_in(harness)
    other = await add_client(harness.app)
    (row,) = await rows(harness, select(BrowserSession))
    now = int(harness.clock.now().timestamp())
    access = signer.sign({"sub": str(row.user_id)}, now=now, ttl_seconds=600, typ="at+jwt", audience=client_id)
    theirs = signer.sign({"sub": str(row.user_id)}, now=now, ttl_seconds=600, typ="JWT", audience=other)
    for hint, extra in ((access, {}), (theirs, {"client_id": client_id})):
        page = await browser.get("/oauth2/logout?" + urlencode({"id_token_hint": hint, **extra}))
        assert page.status_code == 400
    assert len(await rows(harness, select(BrowserSession))) == 1
