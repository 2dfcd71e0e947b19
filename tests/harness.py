"""The functional tests' harness: one app with a frozen clock, cheap Argon2
parameters and a readable outbox, seen through both listeners.

- ``client``: the public listener, from a documentation address (``ADDRESS``);
- ``admin_client``: the admin listener as an mTLS connection reaches it, from
  loopback (the admin allowlist's default) with a verified client
  certificate (``ADMIN_CERTIFICATE``) on every request, as
  ``bastion.network.adminserver`` puts it there after the handshake.

The ``harness`` fixture (tests/conftest.py) opens it; a directory's conftest
changes the app's settings by overriding ``harness_settings``. HTTP helpers
(``register``, ``login``) run the real flows; ``user``, ``signed_in`` and
``admin`` make the same states directly through the services
(tests/factories, which also make API keys and records), for tests where
signing up is setup, not the subject.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.app import create_app
from bastion.clock import FrozenClock
from bastion.identity.models import Account
from bastion.network.listener import PEER_CERT_KEY, AdminListener, PeerCertificate
from bastion.security import totp_at
from bastion.settings import Settings
from factories.identity import ADMIN, NEW_PASSWORD, PASSWORD, create_admin, create_user, sign_in

__all__ = [
    "ADDRESS",
    "ADMIN",
    "ADMIN_CERTIFICATE",
    "CHEAP_ARGON2",
    "NEW_PASSWORD",
    "PASSWORD",
    "DataHarness",
    "Harness",
    "open_harness",
    "over_mtls",
]

# Milliseconds per hash, not production's cost: every test hashes passwords.
CHEAP_ARGON2 = {"memory_cost_kib": 7168, "time_cost": 1}
ADDRESS = "198.51.100.20"  # RFC 5737 TEST-NET-2
ADMIN_CERTIFICATE = PeerCertificate("harness-admin", 0xAD317)

Tokens = dict[str, Any]


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    clock: FrozenClock
    settings: Settings
    admin_client: httpx.AsyncClient | None = None
    address: str = ADDRESS

    # --- mail -----------------------------------------------------------

    async def mails(self, to: str) -> list[email.message.EmailMessage]:
        await self.app.state.postman.drain()
        found = []
        for path in sorted((self.settings.data_dir / "outbox").glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(message, email.message.EmailMessage)
            if message["To"] == to:
                found.append(message)
        return found

    async def token_from_last_mail(self, to: str) -> str:
        """The token of the last mail to ``to`` that has one (a lockout notice, sent
        meanwhile, may be delivered after it)."""
        for message in reversed(await self.mails(to)):
            if match := re.search(r"#token=([A-Za-z0-9_-]+)", message.get_content()):
                return match[1]
        raise AssertionError(f"no mail to {to} carries a token")

    # --- the real flows, over HTTP --------------------------------------

    async def register(self, address: str, password: str = PASSWORD, *, verify: bool = True) -> None:
        response = await self.client.post("/api/v1/auth/register", json={"email": address, "password": password})
        assert response.status_code == 202, response.text
        if verify:
            token = await self.token_from_last_mail(address)
            assert (await self.client.post("/api/v1/auth/verify-email", json={"token": token})).status_code == 204

    async def login(self, address: str, password: str = PASSWORD) -> Tokens:
        response = await self.client.post("/api/v1/auth/login", json={"email": address, "password": password})
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def with_totp(self, address: str) -> tuple[str, list[str]]:
        """Register, sign in and turn TOTP on over HTTP: the secret and the recovery codes.

        The clock then moves to the next step, since the confirming code's step is spent.
        """
        await self.register(address)
        tokens = await self.login(address)
        enrolled = await self.client.post("/api/v1/me/mfa/totp", headers=self.bearer(tokens))
        secret = str(enrolled.json()["secret"])
        confirm = await self.client.post(
            "/api/v1/me/mfa/totp/confirm", json={"code": self.totp(secret)}, headers=self.bearer(tokens)
        )
        assert confirm.status_code == 200, confirm.text
        self.clock.advance(seconds=30)
        return secret, list(confirm.json()["recovery_codes"])

    def totp(self, secret: str) -> str:
        """The code of ``secret`` at the harness clock's current step."""
        return totp_at(secret, int(self.clock.now().timestamp()) // 30)

    @staticmethod
    def bearer(credential: Tokens | str) -> dict[str, str]:
        """The Authorization header for a token pair (its access token) or an API key's text."""
        token = credential if isinstance(credential, str) else credential["access_token"]
        return {"authorization": f"Bearer {token}"}

    # --- the same states, made directly (tests/factories) ---------------

    async def user(self, address: str, *, roles: Sequence[str] = ("user",), verified: bool = True) -> Account:
        """A verified account with ``PASSWORD``, as ``register`` leaves it."""
        return await create_user(self.app, address, roles=roles, verified=verified)

    async def sign_in(self, user: Account, *, mfa: bool = False) -> Tokens:
        """A fresh session of ``user``, as ``login`` returns it."""
        return await sign_in(self.app, user, mfa=mfa)

    async def signed_in(self, address: str, *, roles: Sequence[str] = ("user",)) -> Tokens:
        """A new account, signed in with its password: ``register`` then ``login``."""
        return await self.sign_in(await self.user(address, roles=roles))

    async def admin(self, address: str = ADMIN, *, mfa: bool = True) -> Tokens:
        """An admin signed in; with ``mfa`` (the default) TOTP is on and the session has two factors."""
        user, _ = await create_admin(self.app, address, mfa=mfa)
        return await self.sign_in(user, mfa=mfa)

    # --- records --------------------------------------------------------

    def records(self, collection: str) -> str:
        return f"/api/v1/collections/{collection}/records"

    async def create(self, who: Tokens | str, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(self.records(collection), json=body, headers=self.bearer(who))
        assert response.status_code == 201, response.text
        return dict(response.json())


@dataclass(kw_only=True)
class DataHarness(Harness):
    """The harness with two signed-in users, Alice and Bob (the ``data`` fixture)."""

    alice: Tokens
    bob: Tokens

    @classmethod
    async def of(cls, harness: Harness, alice: str, bob: str) -> DataHarness:
        shared = {field.name: getattr(harness, field.name) for field in fields(Harness)}
        return cls(**shared, alice=await harness.signed_in(alice), bob=await harness.signed_in(bob))


def over_mtls(app: ASGIApp, certificate: PeerCertificate) -> ASGIApp:
    """What the admin server does per connection: the verified certificate on each request's scope."""

    async def connection(scope: Scope, receive: Receive, send: Send) -> None:
        scope = {**scope, "extensions": {**(scope.get("extensions") or {}), PEER_CERT_KEY: certificate}}
        await app(scope, receive, send)

    return connection


@asynccontextmanager
async def open_harness(settings: Settings, clock: FrozenClock) -> AsyncIterator[Harness]:
    """The app of ``settings`` started, with a client on each listener."""
    app = create_app(settings, clock=clock)
    public = httpx.ASGITransport(app=app, client=(ADDRESS, 5000))
    admin = httpx.ASGITransport(
        app=over_mtls(AdminListener(app, client_cert_verified=True), ADMIN_CERTIFICATE), client=("127.0.0.1", 5000)
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=public, base_url="https://testserver") as client,
        httpx.AsyncClient(transport=admin, base_url="https://testserver") as admin_client,
    ):
        yield Harness(app, client, clock, settings, admin_client)
