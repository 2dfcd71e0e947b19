"""The identity tests' harness: an app with a frozen clock, cheap Argon2
parameters and a readable outbox."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass

import httpx
from fastapi import FastAPI

from bastion.clock import FrozenClock
from bastion.settings import Settings

PASSWORD = "tangerine-orbit-cascade-91"
NEW_PASSWORD = "velvet-quarry-lantern-47"


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    clock: FrozenClock
    settings: Settings

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
        body = (await self.mails(to))[-1].get_content()
        match = re.search(r"#token=([A-Za-z0-9_-]+)", body)
        assert match, body
        return match[1]

    async def register(self, address: str, password: str = PASSWORD, *, verify: bool = True) -> None:
        response = await self.client.post("/api/v1/auth/register", json={"email": address, "password": password})
        assert response.status_code == 202, response.text
        if verify:
            token = await self.token_from_last_mail(address)
            assert (await self.client.post("/api/v1/auth/verify-email", json={"token": token})).status_code == 204

    async def login(self, address: str, password: str = PASSWORD) -> dict[str, str]:
        response = await self.client.post("/api/v1/auth/login", json={"email": address, "password": password})
        assert response.status_code == 200, response.text
        return dict(response.json())

    @staticmethod
    def bearer(tokens: dict[str, str]) -> dict[str, str]:
        return {"authorization": f"Bearer {tokens['access_token']}"}
