"""OAuth clients, registered through the registry the CLI and the admin API call,
and the keys and assertions of ``private_key_jwt`` clients (RFC 7523 §3)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import Depends, FastAPI, Request
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry
from starlette.responses import Response

from bastion.access import public
from bastion.db import transaction
from bastion.oauth import routes as oauth_routes
from bastion.oauth.clients import Client, ClientMetadata, ClientRegistry
from bastion.oauth.errors import json_response
from bastion.oauth.forms import read_form
from bastion.oauth.rfc7523 import authenticate_client
from factories import unit_of_work

WEB_APP = ClientMetadata(name="Web app", redirect_uris=("https://app.example/cb",))
NATIVE_APP = ClientMetadata(name="Native app", redirect_uris=("http://127.0.0.1/cb",), public=True)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

SigningKey = RSAKey | ECKey | OKPKey


async def register_client(
    app: FastAPI, metadata: ClientMetadata = WEB_APP, **changes: Any
) -> tuple[Client, str | None]:
    """A registered client and its secret (None without one)."""
    async with unit_of_work(app) as uow:
        return await ClientRegistry.of(app.state).create(uow, dataclasses.replace(metadata, **changes))


def signing_key(alg: str = "RS256", kid: str | None = None) -> SigningKey:
    """A fresh private key of ``alg``'s type, with a kid."""
    parameters = {"kid": kid or uuid.uuid4().hex[:8], "use": "sig"}
    if alg == "RS256":
        return RSAKey.generate_key(2048, parameters=parameters)
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=parameters)
    return OKPKey.generate_key("Ed25519", parameters=parameters)


def public_jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.as_dict(private=False) for key in keys]}


def assertion(
    key: SigningKey,
    client_id: str,
    audience: Any,
    *,
    now: int,
    alg: str | None = None,
    lifetime: int = 60,
    header: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A client assertion signed with ``key``: iss = sub = ``client_id``, a fresh jti; ``claims`` override."""
    alg = alg or {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}[key.key_type]
    payload = {"iss": client_id, "sub": client_id, "aud": audience, "iat": now, "exp": now + lifetime}
    payload["jti"] = uuid.uuid4().hex
    payload.update(claims)
    payload = {name: value for name, value in payload.items() if value is not None}
    protected = {"alg": alg, "kid": key.kid, **(header or {})}
    return jwt.encode(protected, payload, key, registry=JWSRegistry(algorithms=[alg]))


CLIENT_AUTH_ROUTE = "/tests/client-auth"


@asynccontextmanager
async def client_auth_endpoint(app: FastAPI, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a test endpoint that authenticates the client and answers its id.

    It runs on ``app``'s state (database, keys, clock) in an app of its own,
    without the spine middleware, which takes only JSON bodies until form
    bodies are allowed on ``/oauth2/*`` (the token endpoint's own tests then
    cover the same through the real app).
    """

    async def route(request: Request) -> Response:
        params = await read_form(request)
        async with transaction(request.app.state.db) as tx:
            client = await authenticate_client(request, params, tx, request.app.state.oauth)
        return json_response({"client_id": client.id})

    endpoint = FastAPI()
    endpoint.state = app.state
    endpoint.add_api_route(CLIENT_AUTH_ROUTE, route, methods=["POST"], dependencies=[Depends(public)])
    oauth_routes.install(endpoint)
    transport = httpx.ASGITransport(app=endpoint, client=(address, 5000))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        yield client
