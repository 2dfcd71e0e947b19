"""Two real upstream OpenID providers (npm oidc-provider, provider.js) on loopback, and a browser between.

``upstream`` starts them once per session: ``first`` and ``second``, each
with a confidential client ``bastion`` whose redirect URIs are Bastion's
callbacks for both names (so ``second`` can answer on ``first``'s callback:
the mix-up attack). The harness's Bastion is configured with both
(``settings.oauth.providers``, plus ``impostor``: first's issuer with a
trailing slash, which discovery refuses, and ``plain``: second as a plain
OAuth 2.0 provider by explicit endpoints; dev mode: plain ``http`` to loopback is
allowed only there) and a clock set to the real time, since the providers'
tokens carry real times.

``Browser`` plays the user agent: it carries the provider's cookies (and the
test-only ``login_as`` cookie that names the account provider.js signs in),
follows the provider's redirects, and hands the final redirect to Bastion's
callback to the harness client, which holds Bastion's own cookie.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from bastion.clock import FrozenClock
from e2e.serving import missing_peer
from harness import Harness

HERE = Path(__file__).parent
PUBLIC_URL = "https://127.0.0.1:8443"  # Bastion's default auth.public_url
CLIENT_ID = "bastion"
CLIENT_SECRET = "upstream-client-secret-for-tests-only"  # planted: must never appear in a log or an event
NAMES = ("first", "second")
# Bastion's provider names, each with a callback registered at both upstreams.
CALLBACK_NAMES = (*NAMES, "plain")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def callback_url(name: str) -> str:
    return f"{PUBLIC_URL}/api/v1/auth/providers/{name}/callback"


@dataclass
class Upstream:
    name: str
    issuer: str
    process: subprocess.Popen[bytes]

    def add_account(self, account_id: str, *, email: str, email_verified: bool = True) -> None:
        body = {account_id: {"email": email, "email_verified": email_verified}}
        assert httpx.post(f"{self.issuer}/__test/accounts", json=body).status_code == 204

    def mutate_next_id_token(self, **claims: Any) -> None:
        """provider.js re-signs the next ID token it issues, with its own key, carrying ``claims``."""
        assert httpx.post(f"{self.issuer}/__test/mutate", json={"claims": claims}).status_code == 204


def _start(name: str) -> Upstream:
    port = free_port()
    clients = [
        {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [callback_url(n) for n in CALLBACK_NAMES],
        }
    ]
    env = {**os.environ, "PORT": str(port), "CLIENTS": json.dumps(clients)}
    node = shutil.which("node")
    assert node is not None
    process = subprocess.Popen([node, str(HERE / "provider.js")], cwd=HERE, env=env, stdout=subprocess.PIPE)
    assert process.stdout is not None
    line = process.stdout.readline().decode()  # "ready <issuer>", or "" if it died
    if not line.startswith("ready "):
        process.kill()
        pytest.fail(f"provider.js did not start (is `npm ci --prefix {HERE}` done?)")
    return Upstream(name, line.split()[1], process)


@pytest.fixture(scope="session")
def upstream() -> Iterator[dict[str, Upstream]]:
    if shutil.which("node") is None or not (HERE / "node_modules" / "oidc-provider").is_dir():
        missing_peer(f"node and `npm ci --prefix {HERE}` are needed for the upstream provider")
    started = {name: _start(name) for name in NAMES}
    try:
        yield started
    finally:
        for provider in started.values():
            provider.process.terminate()
            provider.process.wait(timeout=10)


@pytest.fixture
def clock() -> FrozenClock:
    """Real time: the upstream providers' tokens carry it (the tests still move it by hand)."""
    return FrozenClock(dt.datetime.now(dt.UTC).replace(microsecond=0))


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "upstream-client-secret"
    path.write_text(CLIENT_SECRET + "\n")
    return path


@pytest.fixture
def harness_settings(upstream: dict[str, Upstream], secret_file: Path) -> dict[str, Any]:
    providers = [
        {
            "name": name,
            "issuer": provider.issuer,
            "client_id": CLIENT_ID,
            "client_secret_file": str(secret_file),
            "scopes": ["openid", "email"],
        }
        for name, provider in upstream.items()
    ]
    # Configured with a trailing slash its metadata's issuer lacks: discovery must refuse it.
    impostor = {**providers[0], "name": "impostor", "issuer": upstream["first"].issuer + "/"}
    # ``second`` as a plain OAuth 2.0 provider (GitHub-style): explicit endpoints, no ID token, userinfo mapped.
    base = upstream["second"].issuer
    plain = {
        **providers[1],
        "name": "plain",
        "kind": "oauth2",
        "authorization_endpoint": f"{base}/auth",
        "token_endpoint": f"{base}/token",
        "userinfo_endpoint": f"{base}/me",
    }
    return {"oauth": {"providers": [*providers, impostor, plain]}}


def new_account_id() -> str:
    return f"acct-{uuid.uuid4().hex[:12]}"


def with_query(url: str, **changes: str | None) -> str:
    """``url`` with query parameters replaced (a value of None removes the parameter)."""
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


class Browser:
    """One user agent: the provider's cookies, and the harness client for Bastion."""

    def __init__(self, harness: Harness, account_id: str) -> None:
        self.harness = harness
        self.provider = httpx.AsyncClient(follow_redirects=False, timeout=10)
        self.provider.cookies.set("login_as", account_id, domain="127.0.0.1")

    async def aclose(self) -> None:
        await self.provider.aclose()

    async def start(self, name: str = "first", *, bastion: httpx.AsyncClient | None = None) -> str:
        """Bastion's start: the provider URL it redirects to (Bastion's cookie kept by the harness client)."""
        response = await (bastion or self.harness.client).get(f"/api/v1/auth/providers/{name}/start?mode=api")
        assert response.status_code == 302, response.text
        return response.headers["location"]

    async def at_provider(self, url: str) -> str:
        """Follow the provider's redirects from ``url`` until one leaves for Bastion: that URL."""
        for _ in range(10):
            if url.startswith(PUBLIC_URL):
                return url
            response = await self.provider.get(url)
            assert response.status_code in (302, 303), response.text
            url = str(response.url.join(response.headers["location"]))
        raise AssertionError("the provider never redirected back to Bastion")

    async def callback(self, url: str, *, bastion: httpx.AsyncClient | None = None) -> httpx.Response:
        parts = urlsplit(url)
        return await (bastion or self.harness.client).get(f"{parts.path}?{parts.query}")

    async def sign_in(self, name: str = "first") -> httpx.Response:
        """The whole round trip: start, the provider, Bastion's callback."""
        return await self.callback(await self.at_provider(await self.start(name)))


def exchange_code(page: httpx.Response) -> str:
    assert page.status_code == 200, page.text
    start = page.text.index('data-code="') + len('data-code="')
    return page.text[start : page.text.index('"', start)]


@pytest.fixture
async def browser_for(harness: Harness) -> Any:
    opened: list[Browser] = []

    def make(account_id: str) -> Browser:
        opened.append(Browser(harness, account_id))
        return opened[-1]

    yield make
    for browser in opened:
        await browser.aclose()
