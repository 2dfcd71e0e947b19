"""OAuth clients, and the codes and device approvals the hosted pages would make.

Clients are rows as registration leaves them; a code is the row
``/oauth2/authorize`` inserts once the user has signed in and consented
(its hash, its PKCE challenge, how the user signed in), so the token
endpoint can be tested without the hosted pages.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from sqlalchemy import insert, update

from bastion.db import transaction
from bastion.oauth.clients import ClientMetadata, ClientRegistry
from bastion.oauth.models import OAuthClient, OAuthCode, OAuthDeviceCode
from bastion.security import hash_token, token_urlsafe
from factories import unit_of_work

REDIRECT_URI = "https://rp.example/callback"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 Appendix B
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
ALL_GRANTS = (
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "urn:ietf:params:oauth:grant-type:device_code",
)


async def create_client(
    app: FastAPI,
    *,
    public: bool = False,
    grant_types: Sequence[str] | None = None,
    scopes: Sequence[str] = ("openid", "email", "offline_access", "records:*", "me:read"),
    redirect_uris: Sequence[str] = (REDIRECT_URI,),
    require_dpop: bool = False,
    alg: str = "EdDSA",
    claims: dict[str, str] | None = None,
) -> tuple[str, str | None]:
    """A client registered as the CLI and the admin API register one: its id, and its secret (None if public)."""
    if grant_types is None:
        grant_types = tuple(grant for grant in ALL_GRANTS if not (public and grant == "client_credentials"))
    metadata = ClientMetadata(
        name="Test client",
        redirect_uris=tuple(redirect_uris),
        public=public,
        grant_types=tuple(grant_types),
        scopes=tuple(scopes),
        require_dpop=require_dpop,
        id_token_alg=alg,
        access_token_alg=alg,
        claims=claims or {},
    )
    async with unit_of_work(app) as uow:
        client, secret = await ClientRegistry.of(app.state).create(uow, metadata)
    return client.id, secret


async def set_client_scopes(app: FastAPI, client_id: str, scopes: Sequence[str]) -> None:
    """An admin's change of the client's registered scopes."""
    async with transaction(app.state.db) as tx:
        await tx.execute(update(OAuthClient).where(OAuthClient.id == client_id).values(scopes=list(scopes)))


def basic(client_id: str, secret: str | None) -> dict[str, str]:
    """``client_secret_basic`` (RFC 6749 §2.3.1)."""
    raw = f"{client_id}:{secret}".encode()
    return {"authorization": "Basic " + base64.b64encode(raw).decode()}


async def create_code(
    app: FastAPI,
    client_id: str,
    user_id: uuid.UUID,
    *,
    scopes: Sequence[str] = ("openid", "email", "records:*"),
    redirect_uri: str = REDIRECT_URI,
    challenge: str = CHALLENGE,
    nonce: str | None = "n-0S6_WzA2Mj",
    amr: Sequence[str] = ("pwd",),
    dpop_jkt: str | None = None,
    session_id: uuid.UUID | None = None,
    ttl: int = 60,
    **extra: Any,
) -> str:
    """An authorization code as /oauth2/authorize issues it after sign-in and consent."""
    code = token_urlsafe(32)
    now = app.state.clock.now()
    async with transaction(app.state.db) as tx:
        await tx.execute(
            insert(OAuthCode).values(
                code_hash=hash_token(code),
                client_id=client_id,
                user_id=user_id,
                session_id=session_id,
                redirect_uri=redirect_uri,
                scopes=list(scopes),
                code_challenge=challenge,
                nonce=nonce,
                auth_time=now,
                amr=list(amr),
                acr=None,
                dpop_jkt=dpop_jkt,
                created_at=now,
                expires_at=now + dt.timedelta(seconds=ttl),
                **extra,
            )
        )
    return code


async def decide_device(app: FastAPI, user_code: str, user_id: uuid.UUID, *, approve: bool = True) -> None:
    """What the device verification page does when the user approves (or denies) ``user_code``."""
    now = app.state.clock.now()
    values = {"user_id": user_id, "approved_at": now} if approve else {"denied_at": now}
    async with transaction(app.state.db) as tx:
        changed = await tx.execute(update(OAuthDeviceCode).where(OAuthDeviceCode.user_code == user_code).values(values))
    assert changed == 1


class DPoPKey:
    """A client's DPoP key pair, making proofs as a client library does (RFC 9449 §4.2)."""

    def __init__(self, alg: str = "ES256") -> None:
        from joserfc.jwk import ECKey, OKPKey, RSAKey

        self.alg = alg
        if alg == "ES256":
            self.key: Any = ECKey.generate_key("P-256")
        elif alg == "EdDSA":
            self.key = OKPKey.generate_key("Ed25519")
        else:
            self.key = RSAKey.generate_key(2048)
        self.public = self.key.as_dict(private=False)

    @property
    def jkt(self) -> str:
        from bastion.security import jwk_thumbprint

        return jwk_thumbprint(self.public)

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
        iat: int | None = None,
        jti: str | None = None,
        now: int,
    ) -> str:
        from joserfc import jwt

        from bastion.security import s256

        claims: dict[str, Any] = {"htm": method, "htu": url, "iat": now if iat is None else iat}
        claims["jti"] = jti or token_urlsafe(16)
        if access_token is not None:
            claims["ath"] = s256(access_token)
        if nonce is not None:
            claims["nonce"] = nonce
        header = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public}
        return str(jwt.encode(header, claims, self.key, algorithms=[self.alg]))
