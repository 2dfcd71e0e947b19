"""Scenario 8's setup: two OAuth clients and the refresh-token chains they start from.

The clients are registered with Bastion's own registry (the code `bastion
oauth client create` calls), one with EdDSA access and ID tokens and one with
RS256; both confidential (``client_secret_basic``), first-party (no consent
page), allowed ``authorization_code``, ``refresh_token`` and
``client_credentials`` with the scopes ``openid offline_access me:read``.
Each refresh chain starts from a real authorization: the bench user signs in
at the hosted pages and the code is exchanged (tests/oauth_flow.py, the
functional tests' user agent), in process against the same data dir the
server uses, since the benchmark server listens over plain HTTP and the
pages' cookies are ``__Host-`` (HTTPS only).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import httpx

from bastion.app import create_app
from bastion.settings import load_settings

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests"))

from bastion.oauth.clients import ClientMetadata, ClientRegistry  # noqa: E402
from factories import unit_of_work  # noqa: E402 - tests/ on the path first
from oauth_flow import Person, authorize  # noqa: E402

REDIRECT_URI = "https://bench.example/callback"
SCOPE = "openid offline_access me:read"
ALGORITHMS = ("EdDSA", "RS256")


@dataclass
class BenchClient:
    alg: str
    client_id: str
    secret: str
    refresh_tokens: list[str]

    @property
    def basic(self) -> str:
        """The Authorization header of client_secret_basic (RFC 6749 §2.3.1: each part form-encoded)."""
        pair = f"{urllib.parse.quote(self.client_id, safe='')}:{urllib.parse.quote(self.secret, safe='')}"
        return "Basic " + base64.b64encode(pair.encode()).decode()


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


async def _prepare(data: Path, env: dict[str, str], email: str, password: str, chains: int) -> list[BenchClient]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        settings = load_settings(data)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    app = create_app(settings)
    issuer = settings.auth.public_url
    made: list[BenchClient] = []
    async with app.router.lifespan_context(app):
        for alg in ALGORITHMS:
            async with unit_of_work(app) as uow:
                client, secret = await ClientRegistry.of(app.state).create(
                    uow,
                    ClientMetadata(
                        name=f"bench {alg}",
                        redirect_uris=(REDIRECT_URI,),
                        grant_types=("authorization_code", "refresh_token", "client_credentials"),
                        scopes=tuple(SCOPE.split()),
                        first_party=True,
                        id_token_alg=alg,
                        access_token_alg=alg,
                    ),
                )
            assert secret is not None
            bench = BenchClient(alg, client.id, secret, [])
            for _ in range(chains):
                bench.refresh_tokens.append(await _refresh_token(app, issuer, bench, email, password))
            made.append(bench)
    return made


async def _refresh_token(app: object, issuer: str, client: BenchClient, email: str, password: str) -> str:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))  # type: ignore[arg-type]
    verifier = secrets.token_urlsafe(48)
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": SCOPE,
        "state": secrets.token_urlsafe(12),
        "nonce": secrets.token_urlsafe(12),
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }
    async with httpx.AsyncClient(transport=transport, base_url=issuer) as browser:
        url = f"{issuer}/oauth2/authorize?{urllib.parse.urlencode(params)}"
        flow = await authorize(browser, url, Person(email, password))
        response = await browser.post(
            "/oauth2/token",
            data={"grant_type": "authorization_code", "code": flow.code, "redirect_uri": REDIRECT_URI,
                  "code_verifier": verifier},
            headers={"authorization": client.basic},
        )  # fmt: skip
    response.raise_for_status()
    return str(response.json()["refresh_token"])


def prepare(data: Path, env: dict[str, str], email: str, password: str, chains: int = 4) -> list[BenchClient]:
    """The EdDSA and RS256 clients, each with ``chains`` fresh refresh tokens."""
    return asyncio.run(_prepare(data, env, email, password, chains))
