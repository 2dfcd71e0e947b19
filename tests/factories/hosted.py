"""OAuth clients and the hosted pages, driven as a browser drives them.

``add_client`` writes an ``oauth_clients`` row directly (the registration
paths are tested in their own module); ``Browser`` is an httpx client with a
cookie jar that reads each page's form and posts it back, CSRF token
included, following redirects only on this origin.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from base64 import urlsafe_b64encode
from dataclasses import dataclass, field
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from fastapi import FastAPI
from sqlalchemy import insert

from bastion.oauth.models import OAuthClient
from factories import unit_of_work

REDIRECT_URI = "https://app.example/callback"


async def add_client(app: FastAPI, **fields: Any) -> str:
    """A registered client (public, PKCE, code grant) and its id; ``fields`` override columns."""
    client_id = fields.pop("id", None) or "client-" + secrets.token_hex(6)
    row = {
        "id": client_id,
        "name": "Example App",
        "secret_hash": None,
        "public": True,
        "first_party": False,
        "token_endpoint_auth_method": "none",
        "redirect_uris": [REDIRECT_URI],
        "post_logout_redirect_uris": ["https://app.example/signed-out"],
        "grant_types": ["authorization_code", "refresh_token"],
        "scopes": ["openid", "profile", "email", "offline_access", "me:read"],
        "jwks": None,
        "jwks_uri": None,
        "require_par": False,
        "require_dpop": False,
        "id_token_alg": "EdDSA",
        "access_token_alg": "EdDSA",
        "backchannel_logout_uri": None,
        "claims": {},
        "created_at": dt.datetime.now(dt.UTC),
        **fields,
    }
    async with unit_of_work(app) as uow:
        await uow.db.execute(insert(OAuthClient), row)
    return client_id


def pkce() -> tuple[str, str]:
    """A PKCE verifier and its S256 challenge (RFC 7636 §4.1-§4.2)."""
    verifier = secrets.token_urlsafe(48)
    challenge = urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_query(client_id: str, challenge: str, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email",
        "state": "st-" + secrets.token_hex(4),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }


def query_of(location: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


_INPUT = re.compile(r"<input\b[^>]*>")
_ATTR = re.compile(r'([a-z_-]+)="([^"]*)"')
_FORM = re.compile(r'<form id="([^"]+)" method="post" action="([^"]+)">(.*?)</form>', re.S)


@dataclass
class Form:
    id: str
    action: str
    fields: dict[str, str] = field(default_factory=dict)


def forms_of(html: str) -> dict[str, Form]:
    """Each form of a page, with its hidden and pre-filled inputs."""
    found = {}
    for form_id, action, body in _FORM.findall(html):
        values = {}
        for tag in _INPUT.findall(body):
            attrs = {name: unescape(value) for name, value in _ATTR.findall(tag)}
            if "name" in attrs:
                values[attrs["name"]] = attrs.get("value", "")
        found[form_id] = Form(form_id, action, values)
    return found


@dataclass
class Browser:
    """The harness's client, as a browser on the hosted pages."""

    client: httpx.AsyncClient

    async def get(self, url: str, params: dict[str, str] | None = None) -> httpx.Response:
        return await self.client.get(url, params=params)

    async def follow(self, response: httpx.Response) -> httpx.Response:
        """Follow redirects while they stay on this origin; the first answer that is not one, or leaves."""
        while response.is_redirect:
            location = response.headers["location"]
            if not location.startswith("/"):
                return response
            response = await self.client.get(location)
        return response

    async def submit(self, page: httpx.Response, form_id: str, **values: str) -> httpx.Response:
        form = forms_of(page.text)[form_id]
        return await self.client.post(form.action, data={**form.fields, **values})

    async def start(self, query: dict[str, str]) -> httpx.Response:
        """GET /oauth2/authorize with ``query``, followed to the first page or off-site redirect."""
        return await self.follow(await self.client.get("/oauth2/authorize?" + urlencode(query)))

    async def sign_in(self, page: httpx.Response, email: str, password: str, code: str | None = None) -> httpx.Response:
        """Sign in on ``page`` (the sign-in page), then the second factor if asked; followed."""
        answer = await self.submit(page, "sign-in", email=email, password=password)
        if code is not None:
            assert "second-factor" in forms_of(answer.text), answer.text
            answer = await self.submit(answer, "second-factor", code=code)
        return await self.follow(answer)
