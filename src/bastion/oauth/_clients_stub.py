"""TEMPORARY STUB, DELETE AT MERGE: the "clients" helper's interface, so tokens can be built and tested first.

Replace every ``from bastion.oauth._clients_stub import …`` with the real
``bastion.oauth.clients`` (``Client``, ``get_client``, ``redirect_uri_matches``)
and ``bastion.oauth.rfc7523`` (``authenticate_client``), then delete this file
and ``hash_client_secret``'s use in tests/factories/oauth.py.

Only ``client_secret_basic``, ``client_secret_post`` and ``none`` are here,
with the secret stored as ``hash_token`` (the real module uses a keyed hash).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from fastapi import Request
from sqlalchemy import bindparam, select

from bastion.db.database import Queries, Transaction
from bastion.oauth.errors import OAuthError
from bastion.oauth.forms import Params
from bastion.oauth.models import OAuthClient
from bastion.oauth.service import OAuthService
from bastion.security import constant_time_equals, hash_token

_CLIENT = select(OAuthClient).where(OAuthClient.id == bindparam("client_id"))


@dataclass(frozen=True)
class Client:
    id: str
    name: str
    public: bool
    first_party: bool
    token_endpoint_auth_method: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    scopes: tuple[str, ...]
    jwks: dict[str, Any] | None
    jwks_uri: str | None
    require_par: bool
    require_dpop: bool
    id_token_alg: str
    access_token_alg: str
    backchannel_logout_uri: str | None
    claims: dict[str, str]


def hash_client_secret(secret: str) -> str:
    return hash_token(secret)


async def get_client(db: Queries, client_id: str) -> Client | None:
    row = await db.one(_CLIENT, {"client_id": client_id})
    if row is None:
        return None
    return Client(
        id=row.id,
        name=row.name,
        public=row.public,
        first_party=row.first_party,
        token_endpoint_auth_method=row.token_endpoint_auth_method,
        redirect_uris=tuple(row.redirect_uris),
        post_logout_redirect_uris=tuple(row.post_logout_redirect_uris or ()),
        grant_types=tuple(row.grant_types),
        scopes=tuple(row.scopes),
        jwks=row.jwks,
        jwks_uri=row.jwks_uri,
        require_par=row.require_par,
        require_dpop=row.require_dpop,
        id_token_alg=row.id_token_alg,
        access_token_alg=row.access_token_alg,
        backchannel_logout_uri=row.backchannel_logout_uri,
        claims=dict(row.claims or {}),
    )


def redirect_uri_matches(client: Client, uri: str) -> bool:
    return uri in client.redirect_uris


async def authenticate_client(request: Request, params: Params, db: Transaction, oauth: OAuthService) -> Client:
    refused = OAuthError("invalid_client", "Client authentication failed.", status=401)
    header = request.headers.get("authorization", "")
    client_id, secret = params.get("client_id"), params.get("client_secret")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise refused from None
        name, _, password = decoded.partition(":")
        client_id, secret = unquote(name), unquote(password)
    if not client_id:
        raise refused
    client = await get_client(db, client_id)
    if client is None:
        raise refused
    row = await db.one(select(OAuthClient.secret_hash).where(OAuthClient.id == client_id))
    if client.token_endpoint_auth_method == "none":  # noqa: S105 - a method name
        if secret is not None:
            raise refused
        return client
    if secret is None or row is None or row.secret_hash is None:
        raise refused
    if not constant_time_equals(hash_client_secret(secret), row.secret_hash):
        raise refused
    return client
