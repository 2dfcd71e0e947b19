"""The OAuth 2.0 / OpenID Connect tables.

A *client* is an application registered with Bastion (RFC 6749 §2). A
*grant* is what one user (or, for client credentials, the client itself)
granted one client: its scopes, how the user signed in, and the refresh
tokens issued under it, one rotation family per grant (RFC 9700 §4.14.2).
Revoking the grant kills every token of it. Codes, pushed requests, device
codes, replay markers and one-time exchange codes are short-lived, stored
hashed, and claimed with one ``UPDATE … WHERE used_at IS NULL`` each.

The identities and flows at the end are Bastion as a *client* of other
providers: an identity is keyed by the provider's (``iss``, ``sub``), never
by an email address.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime


class OAuthClient(Base):
    __tablename__ = "oauth_clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the client_id
    name: Mapped[str] = mapped_column(String(128))
    # A keyed hash of the secret (high-entropy, so no password-hash cost); None for public clients.
    secret_hash: Mapped[str | None] = mapped_column(String(128))
    secret_rotated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # When the secret stops authenticating (oauth.client_secret_lifetime after it was issued);
    # None for a client without a secret (public, private_key_jwt).
    secret_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    first_party: Mapped[bool] = mapped_column(Boolean, default=False)
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(32))
    redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    grant_types: Mapped[list[str]] = mapped_column(JSON)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    jwks_uri: Mapped[str | None] = mapped_column(String(512))
    require_par: Mapped[bool] = mapped_column(Boolean, default=False)
    require_dpop: Mapped[bool] = mapped_column(Boolean, default=False)
    id_token_alg: Mapped[str] = mapped_column(String(16), default="RS256")
    access_token_alg: Mapped[str] = mapped_column(String(16), default="RS256")
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(512))
    # Extra claims for this client's tokens: claim name -> user field.
    claims: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    owner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class OAuthGrant(Base):
    __tablename__ = "oauth_grants"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"), index=True)
    # None: a client-credentials grant, the client acting as itself.
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The browser session the user signed in with (logout ends its grants; back-channel ``sid``).
    session_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("sessions.id", ondelete="SET NULL"), index=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    auth_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    amr: Mapped[list[str]] = mapped_column(JSON, default=list)
    acr: Mapped[str | None] = mapped_column(String(64))
    # RFC 7638 thumbprint of the DPoP key its tokens are bound to (RFC 9449 §6).
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoke_reason: Mapped[str | None] = mapped_column(String(64))


class OAuthRefreshToken(Base):
    __tablename__ = "oauth_refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    grant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("oauth_grants.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class OAuthCode(Base):
    """An authorization code (RFC 6749 §4.1.2): single-use, at most 60 s."""

    __tablename__ = "oauth_codes"

    code_hash: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    session_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("sessions.id", ondelete="SET NULL"))
    redirect_uri: Mapped[str] = mapped_column(String(2048))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    code_challenge: Mapped[str] = mapped_column(String(128))  # S256 only (RFC 7636 §4.2)
    nonce: Mapped[str | None] = mapped_column(String(512))
    auth_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    amr: Mapped[list[str]] = mapped_column(JSON)
    acr: Mapped[str | None] = mapped_column(String(64))
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Set when the code is exchanged: a second use revokes this grant (RFC 6749 §4.1.2).
    grant_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class OAuthConsent(Base):
    """The scopes a user consented to for a client, remembered until revoked."""

    __tablename__ = "oauth_consents"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"), primary_key=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class OAuthPushedRequest(Base):
    """A pushed authorization request (RFC 9126): its parameters until its ``request_uri`` is used."""

    __tablename__ = "oauth_pushed_requests"

    uri_hash: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"))
    parameters: Mapped[dict[str, str]] = mapped_column(JSON)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class OAuthReplay(Base):
    """A ``jti`` seen once (client assertions, DPoP proofs); a second insert is a replay."""

    __tablename__ = "oauth_replays"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # "assertion", "dpop"
    jti_hash: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)


class OAuthDeviceCode(Base):
    """A device authorization (RFC 8628): polled by the device, approved by the user elsewhere."""

    __tablename__ = "oauth_device_codes"

    device_code_hash: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_code: Mapped[str] = mapped_column(String(16), unique=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.id", ondelete="CASCADE"))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_polled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    approved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    denied_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class BrowserSession(Base):
    """The hosted pages' sign-in: a ``__Host-`` cookie names one (hashed) and one session.

    It never authenticates an ``/api/v1`` request: only the hosted pages and
    ``/oauth2/authorize`` read it.
    """

    __tablename__ = "oauth_browser_sessions"

    token_hash: Mapped[str] = mapped_column(String(128), primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    auth_time: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    amr: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class LinkedIdentity(Base):
    """An account at another provider linked to a Bastion user, keyed by (``iss``, ``sub``)."""

    __tablename__ = "oauth_identities"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(512))
    subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ProviderFlow(Base):
    """One sign-in at another provider in progress: its ``state``, ``nonce`` and PKCE verifier.

    ``browser_hash`` binds it to the cookie of the browser that started it;
    ``link_user_id`` is set when a signed-in user links a new identity.
    After the callback, ``exchange_hash`` holds the one-time code an API
    client exchanges for tokens (no token ever travels in a URL), or that
    the hosted pages spend once to open a browser session; ``resume`` is the
    handle of the pending authorization request a hosted sign-in goes back to.
    """

    __tablename__ = "oauth_provider_flows"

    state_hash: Mapped[str] = mapped_column(String(128), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    browser_hash: Mapped[str] = mapped_column(String(128))
    nonce: Mapped[str] = mapped_column(String(128))
    code_verifier: Mapped[str] = mapped_column(String(128))
    mode: Mapped[str] = mapped_column(String(16))  # "hosted" or "api"
    link_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    exchange_hash: Mapped[str | None] = mapped_column(String(128), unique=True)
    exchanged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    resume: Mapped[str | None] = mapped_column(String(128))
