"""OAuth clients, registered through the registry the CLI and the admin API call,
and the keys and assertions of ``private_key_jwt`` clients (RFC 7523 §3)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from bastion.oauth.clients import Client, ClientMetadata, ClientRegistry
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
