"""OAuth clients (RFC 6749 §2): what is registered, its secret, and redirect URI matching.

A client's metadata follows RFC 7591 §2 and is validated the same way
whichever way it arrives (``bastion oauth client create``, the admin API,
dynamic registration):

- redirect URIs (RFC 6749 §3.1.2, RFC 9700 §4.1.3) are absolute, carry no
  fragment and no wildcard, and are ``https``; ``http`` only for the
  loopback literals ``127.0.0.1`` and ``[::1]`` (RFC 8252 §7.3, §8.3: not
  ``localhost``), or a private-use scheme of a native app named after a
  domain the app owns (``com.example.app:/cb``, RFC 8252 §7.1);
- grant types are those Bastion implements (no implicit, no password);
- scopes are among discovery's ``scopes_supported``;
- the token endpoint authentication method (RFC 7591 §2) is the one the
  client will use, and the only one accepted for it: a secret registered
  for ``client_secret_basic`` does not also authenticate in the body
  (``client_secret_post``). Public clients use ``none``; a client with a
  JWK Set uses ``private_key_jwt`` (RFC 7523 §2.2).

A client secret is 32 random bytes, shown once, and stored as a keyed hash
(``bastion.security.keyed``): it is high-entropy, so it needs no password
hash's cost, and the digest names its key, so rotating the "hmac" keyring
does not invalidate it. It expires ``oauth.client_secret_lifetime`` after it
was issued (``secret_expires_at``; registration and rotation set it): past
that it no longer authenticates (``bastion.oauth.rfc7523``), and the rotation
job reminds the client's owner beforehand (``bastion.rotation.reminders``).

Deleting a client deletes its grants, codes, consents and pushed requests
with it (foreign keys ``ON DELETE CASCADE``): every token issued to it stops
working.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import ipaddress
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, Protocol
from urllib.parse import SplitResult, urlsplit

from sqlalchemy import bindparam, delete, insert, select, update

from bastion.audit import EventTag, record_event
from bastion.clock import Clock
from bastion.db import MissingReference
from bastion.db.database import Queries
from bastion.oauth.models import OAuthClient
from bastion.oauth.scopes import scopes_supported
from bastion.oauth.ssrf import forbidden_address
from bastion.security import Keyring, keyed_hash, keyed_hash_matches, public_id, token_urlsafe
from bastion.security.client_jwt import public_jwks_problem
from bastion.settings import Settings
from bastion.uow import UnitOfWork

__all__ = [
    "AUTH_METHODS",
    "CLAIM_FIELDS",
    "DEVICE_CODE",
    "GRANT_TYPES",
    "SECRET_METHODS",
    "TOKEN_ALGORITHMS",
    "Client",
    "ClientMetadata",
    "ClientRegistry",
    "InvalidClientMetadata",
    "get_client",
    "redirect_uri_matches",
]

DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials", DEVICE_CODE)
# RS256 is mandatory for OpenID providers (OpenID Connect Core §15.1).
TOKEN_ALGORITHMS = ("RS256", "ES256", "EdDSA")
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
AUTH_METHODS = (*SECRET_METHODS, "private_key_jwt", "none")
# The user fields an admin may map to a custom claim of a client's tokens.
CLAIM_FIELDS = ("email", "email_verified", "roles", "mfa_enabled")
DEFAULT_GRANTS = ("authorization_code", "refresh_token")
DEFAULT_SCOPES = ("openid", "profile", "email", "offline_access")

_SECRET_CONTEXT = "oauth_clients.secret"  # noqa: S105 - the digest's context label, not a secret
_LOOPBACK_HOSTS = ("127.0.0.1", "[::1]")
_PORT = re.compile(r"(:[0-9]{1,5})?")
_MAX_URIS = 16
_MAX_URI = 2048
_MAX_COLUMN_URI = 512  # jwks_uri, backchannel_logout_uri
_MAX_SCOPES = 64
_MAX_CLAIMS = 16
# RFC 8252 §7.1: a private-use scheme is a reverse domain name the app owns.
_PRIVATE_SCHEME = re.compile(r"[a-z][a-z0-9+-]*(\.[a-z0-9+-]+)+")
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,128}")
_CLAIM_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Claims the signer, the protocol or OpenID Connect define: never an admin's to set.
_RESERVED_CLAIMS = frozenset(
    {
        "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "azp", "nonce", "auth_time", "amr", "acr",
        "at_hash", "c_hash", "sid", "scope", "client_id", "cnf", "typ", "email", "email_verified",
    }
)  # fmt: skip


class InvalidClientMetadata(Exception):
    """Metadata refused (RFC 7591 §3.2.2): ``error`` is ``invalid_redirect_uri`` or ``invalid_client_metadata``.

    The message names the field and the rule, never echoes the value.
    """

    def __init__(self, error: Literal["invalid_redirect_uri", "invalid_client_metadata"], message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


@dataclass(frozen=True)
class Client:
    """A registered client, as the flows read it (no secret)."""

    id: str
    name: str
    public: bool
    first_party: bool
    token_endpoint_auth_method: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    scopes: tuple[str, ...]
    jwks: Mapping[str, Any] | None
    jwks_uri: str | None
    require_par: bool
    require_dpop: bool
    id_token_alg: str
    access_token_alg: str
    backchannel_logout_uri: str | None
    claims: Mapping[str, str]
    created_at: dt.datetime | None = None
    secret_rotated_at: dt.datetime | None = None
    secret_expires_at: dt.datetime | None = None
    owner_id: uuid.UUID | None = None  # the user reminded before the secret expires

    @property
    def confidential(self) -> bool:
        """RFC 6749 §2.1: it can authenticate (a secret or a key)."""
        return not self.public

    def secret_expired(self, now: dt.datetime) -> bool:
        """Whether its secret no longer authenticates at ``now`` (False without a secret or an expiry)."""
        return self.secret_expires_at is not None and now >= self.secret_expires_at

    def describe(self) -> dict[str, Any]:
        """Its metadata as JSON (RFC 7591 §2 names), never a secret."""
        return {
            "client_id": self.id,
            "client_name": self.name,
            "public": self.public,
            "first_party": self.first_party,
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "redirect_uris": list(self.redirect_uris),
            "post_logout_redirect_uris": list(self.post_logout_redirect_uris),
            "grant_types": list(self.grant_types),
            "scope": " ".join(self.scopes),
            "jwks": dict(self.jwks) if self.jwks is not None else None,
            "jwks_uri": self.jwks_uri,
            "require_pushed_authorization_requests": self.require_par,
            "dpop_bound_access_tokens": self.require_dpop,
            "id_token_signed_response_alg": self.id_token_alg,
            "access_token_signed_response_alg": self.access_token_alg,
            "backchannel_logout_uri": self.backchannel_logout_uri,
            "claims": dict(self.claims),
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "secret_rotated_at": self.secret_rotated_at.isoformat() if self.secret_rotated_at else None,
            "secret_expires_at": self.secret_expires_at.isoformat() if self.secret_expires_at else None,
            "owner_id": str(self.owner_id) if self.owner_id else None,
        }


@dataclass(frozen=True)
class ClientMetadata:
    """What a registration asks for; ``ClientRegistry.validate`` normalises it or refuses it.

    ``token_endpoint_auth_method=None`` means: derived from the rest (``none``
    when ``public``, ``private_key_jwt`` with a JWK Set, else
    ``client_secret_basic``). Empty ``grant_types`` and ``scopes`` mean
    ``DEFAULT_GRANTS`` and ``DEFAULT_SCOPES``.
    """

    name: str
    redirect_uris: tuple[str, ...] = ()
    public: bool = False
    token_endpoint_auth_method: str | None = None
    grant_types: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    first_party: bool = False
    jwks: Mapping[str, Any] | None = None
    jwks_uri: str | None = None
    require_par: bool = False
    require_dpop: bool = False
    id_token_alg: str = "RS256"  # noqa: S105 - an algorithm name
    access_token_alg: str = "RS256"  # noqa: S105 - an algorithm name
    backchannel_logout_uri: str | None = None
    post_logout_redirect_uris: tuple[str, ...] = ()
    claims: Mapping[str, str] = dataclasses.field(default_factory=dict)


class _HasServices(Protocol):
    """What both ``app.state`` and the command line's ``Services`` hold."""

    settings: Settings
    clock: Clock

    @property
    def keys(self) -> Any: ...  # bastion.secrets.Keyrings (a layer above oauth's reach for types only)


# Built once: the token endpoint reads a client on every request.
_BY_ID = select(OAuthClient).where(OAuthClient.id == bindparam("client_id"))
_ALL = select(OAuthClient).order_by(OAuthClient.created_at, OAuthClient.id)
_INSERT = insert(OAuthClient)
_ROTATE = (
    update(OAuthClient)
    .where(OAuthClient.id == bindparam("client_id"), OAuthClient.secret_hash.is_not(None))
    .values(
        secret_hash=bindparam("secret_hash"),
        secret_rotated_at=bindparam("now"),
        secret_expires_at=bindparam("expires_at"),
    )
    .returning(OAuthClient.id)
)
_DELETE = delete(OAuthClient).where(OAuthClient.id == bindparam("client_id"))
_SET_OWNER = update(OAuthClient).where(OAuthClient.id == bindparam("client_id")).values(owner_id=bindparam("owner"))


def _client(row: Any) -> Client:
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
        created_at=row.created_at,
        secret_rotated_at=row.secret_rotated_at,
        secret_expires_at=row.secret_expires_at,
        owner_id=row.owner_id,
    )


async def get_client(db: Queries, client_id: str) -> Client | None:
    """The client registered as ``client_id``, or None."""
    found = await client_and_secret(db, client_id)
    return found[0] if found is not None else None


async def client_and_secret(db: Queries, client_id: str) -> tuple[Client, str | None] | None:
    """The client and its stored secret digest (None without a secret), or None: one query."""
    if not client_id or len(client_id) > 64:  # the column's width: nothing longer exists
        return None
    row = await db.one(_BY_ID, {"client_id": client_id})
    return (_client(row), row.secret_hash) if row is not None else None


def redirect_uri_matches(client: Client, uri: str) -> bool:
    """Whether ``uri`` is one of ``client``'s redirect URIs (RFC 6749 §3.1.2.3, RFC 9700 §4.1.3).

    Exact string comparison, with one exception: a registered loopback
    ``http`` URI matches the same URI on any port (RFC 8252 §7.3), since a
    native app listens on whichever port the system gives it.
    """
    if uri in client.redirect_uris:
        return True
    asked = _loopback(uri)
    if asked is None:
        return False
    return any(_loopback(registered) == asked for registered in client.redirect_uris)


def _loopback(uri: str) -> tuple[str, str, str] | None:
    """(host, path, query) of an ``http`` loopback URI, whatever its port, else None."""
    try:
        split = urlsplit(uri)
    except ValueError:
        return None
    if split.scheme != "http" or "#" in uri:
        return None
    for host in _LOOPBACK_HOSTS:
        if split.netloc.startswith(host) and _PORT.fullmatch(split.netloc[len(host) :]):
            return host, split.path, split.query
    return None


class ClientRegistry:
    """Registering, listing, rotating and deleting clients; checking their secrets."""

    def __init__(self, settings: Settings, clock: Clock, hmac: Keyring) -> None:
        self.settings = settings
        self.clock = clock
        self._hmac = hmac

    @classmethod
    def of(cls, services: _HasServices) -> ClientRegistry:
        """The registry of the app's state (``request.app.state``) or the command line's services."""
        return cls(services.settings, services.clock, services.keys.hmac)

    # --- metadata ---------------------------------------------------------

    def validate(self, metadata: ClientMetadata) -> ClientMetadata:
        """``metadata`` normalised (defaults filled in), or InvalidClientMetadata naming the rule broken."""
        if not _NAME.fullmatch(metadata.name) or not metadata.name.strip():
            _refuse("client_name must be 1 to 128 printable characters")
        method, public = self._method(metadata)
        grants = _grants(metadata, public=public)
        redirect_uris = _unique(metadata.redirect_uris)
        post_logout = _unique(metadata.post_logout_redirect_uris)
        if len(redirect_uris) > _MAX_URIS or len(post_logout) > _MAX_URIS:
            _refuse(f"at most {_MAX_URIS} redirect URIs")
        if "authorization_code" in grants and not redirect_uris:
            _refuse("authorization_code needs at least one redirect_uri", "invalid_redirect_uri")
        for uri in redirect_uris:
            _check_redirect_uri(uri, "redirect_uris")
        for uri in post_logout:
            _check_redirect_uri(uri, "post_logout_redirect_uris")
        if metadata.backchannel_logout_uri is not None:
            self._check_fetched_uri(metadata.backchannel_logout_uri, "backchannel_logout_uri")
        scopes = _unique(metadata.scopes) or DEFAULT_SCOPES
        if len(scopes) > _MAX_SCOPES or not set(scopes) <= set(scopes_supported(self.settings)):
            _refuse("scope must list scopes from scopes_supported")
        _check_algorithms_and_claims(metadata)
        return dataclasses.replace(
            metadata,
            name=metadata.name.strip(),
            public=public,
            token_endpoint_auth_method=method,
            grant_types=grants,
            scopes=scopes,
            redirect_uris=redirect_uris,
            post_logout_redirect_uris=post_logout,
            jwks=dict(metadata.jwks) if metadata.jwks is not None else None,
            claims=dict(metadata.claims),
        )

    def _method(self, metadata: ClientMetadata) -> tuple[str, bool]:
        """(token_endpoint_auth_method, public): RFC 7591 §2, RFC 7523 §2.2."""
        method = metadata.token_endpoint_auth_method or _derived_method(metadata)
        if method not in AUTH_METHODS:
            _refuse(f"token_endpoint_auth_method must be one of {', '.join(AUTH_METHODS)}")
        public = metadata.public or method == "none"
        if public and method != "none":
            _refuse("a public client authenticates with token_endpoint_auth_method none")
        if method == "private_key_jwt":
            if (metadata.jwks is None) == (metadata.jwks_uri is None):
                _refuse("private_key_jwt needs exactly one of jwks and jwks_uri")
        elif metadata.jwks is not None or metadata.jwks_uri is not None:
            _refuse("jwks and jwks_uri are for private_key_jwt clients only")
        if metadata.jwks is not None:
            problem = public_jwks_problem(dict(metadata.jwks))
            if problem is not None:
                _refuse(f"jwks: {problem}")
        if metadata.jwks_uri is not None:
            self._check_fetched_uri(metadata.jwks_uri, "jwks_uri")
        return method, public

    def _check_fetched_uri(self, uri: str, field: str) -> None:
        """A URL Bastion itself fetches or posts to: absolute ``https`` (``http`` in dev or
        with ``oauth.allow_private_jwks_uri``, for loopback test servers), no fragment.
        Where it points is checked again at every fetch (``bastion.oauth.ssrf``)."""
        split = _split(uri, field, "invalid_client_metadata")
        plain_allowed = self.settings.mode == "dev" or self.settings.oauth.allow_private_jwks_uri
        if len(uri) > _MAX_COLUMN_URI or not split.hostname or split.username or split.password:
            _refuse(f"{field} must be an absolute URL with a host, at most {_MAX_COLUMN_URI} characters")
        if split.scheme != "https" and not (split.scheme == "http" and plain_allowed):
            _refuse(f"{field} must use https")
        try:
            literal = ipaddress.ip_address(split.hostname or "")
        except ValueError:
            return  # a name: where it resolves is checked at each fetch
        if forbidden_address(literal) and not plain_allowed:
            _refuse(f"{field} must not point at a private, loopback, link-local or reserved address")

    # --- the registry -----------------------------------------------------

    async def create(
        self,
        uow: UnitOfWork,
        metadata: ClientMetadata,
        *,
        actor_id: uuid.UUID | None = None,
        dynamic: bool = False,
        owner_id: uuid.UUID | None = None,
    ) -> tuple[Client, str | None]:
        """Register a client: (the client, its secret, shown this once; None if it has none).

        ``owner_id``: the user reminded before its secret expires (InvalidClientMetadata if there
        is no such user); without one, the reminders go to ``[alerts] mail_to``.
        """
        valid = self.validate(metadata)
        client_id = public_id(16)
        secret = token_urlsafe(32) if valid.token_endpoint_auth_method in SECRET_METHODS else None
        now = self.clock.now()
        with _known_owner():
            await uow.db.execute(
                _INSERT,
                {
                    "id": client_id,
                    "name": valid.name,
                    "secret_hash": self._digest(secret) if secret is not None else None,
                    "secret_rotated_at": None,
                    "secret_expires_at": self._secret_expiry(now) if secret is not None else None,
                    "public": valid.public,
                    "first_party": valid.first_party,
                    "token_endpoint_auth_method": valid.token_endpoint_auth_method,
                    "redirect_uris": list(valid.redirect_uris),
                    "post_logout_redirect_uris": list(valid.post_logout_redirect_uris),
                    "grant_types": list(valid.grant_types),
                    "scopes": list(valid.scopes),
                    "jwks": valid.jwks,
                    "jwks_uri": valid.jwks_uri,
                    "require_par": valid.require_par,
                    "require_dpop": valid.require_dpop,
                    "id_token_alg": valid.id_token_alg,
                    "access_token_alg": valid.access_token_alg,
                    "backchannel_logout_uri": valid.backchannel_logout_uri,
                    "claims": dict(valid.claims),
                    "owner_id": owner_id,
                    "created_at": now,
                },
            )
        record_event(
            uow.db,
            self.clock,
            EventTag.OAUTH_CLIENT_CREATE,
            origin=uow.origin,
            actor_id=actor_id,
            details={
                "client_id": client_id,
                "method": valid.token_endpoint_auth_method,
                "grant_types": list(valid.grant_types),
                "dynamic": dynamic,
                "owner_id": str(owner_id) if owner_id else None,
            },
        )
        client = await get_client(uow.db, client_id)
        assert client is not None  # noqa: S101 - inserted just above, in this transaction
        return client, secret

    async def list(self, db: Queries) -> list[Client]:
        """Every client, oldest first."""
        return [_client(row) for row in await db.all(_ALL)]

    async def rotate_secret(
        self, uow: UnitOfWork, client_id: str, *, actor_id: uuid.UUID | None = None
    ) -> tuple[str, dt.datetime] | None:
        """A new secret for a client that has one, and when it expires (the old one stops working
        at once); None if no such client.

        InvalidClientMetadata for a client without a secret (public, or ``private_key_jwt``).
        """
        client = await get_client(uow.db, client_id)
        if client is None:
            return None
        secret = token_urlsafe(32)
        now = self.clock.now()
        expires_at = self._secret_expiry(now)
        rotated = await uow.db.changed(
            _ROTATE,
            {"client_id": client_id, "secret_hash": self._digest(secret), "now": now, "expires_at": expires_at},
        )
        if rotated is None:
            _refuse(f"this client authenticates with {client.token_endpoint_auth_method}: it has no secret")
        record_event(
            uow.db,
            self.clock,
            EventTag.OAUTH_CLIENT_SECRET_ROTATE,
            origin=uow.origin,
            actor_id=actor_id,
            details={"client_id": client_id, "expires_at": expires_at.isoformat()},
        )
        return secret, expires_at

    async def set_owner(
        self, uow: UnitOfWork, client_id: str, owner_id: uuid.UUID | None, *, actor_id: uuid.UUID | None = None
    ) -> bool:
        """Make ``owner_id`` (None: nobody) the user reminded before the client's secret expires;
        False if there is no such client, InvalidClientMetadata if there is no such user."""
        with _known_owner():
            changed = await uow.db.execute(_SET_OWNER, {"client_id": client_id, "owner": owner_id})
        if not changed:
            return False
        record_event(
            uow.db,
            self.clock,
            EventTag.OAUTH_CLIENT_OWNER,
            origin=uow.origin,
            actor_id=actor_id,
            details={"client_id": client_id, "owner_id": str(owner_id) if owner_id else None},
        )
        return True

    async def delete(self, uow: UnitOfWork, client_id: str, *, actor_id: uuid.UUID | None = None) -> bool:
        """Delete a client and, by cascade, every grant, code, consent and request of it; False if none."""
        if await get_client(uow.db, client_id) is None:
            return False
        await uow.db.execute(_DELETE, {"client_id": client_id})
        record_event(
            uow.db,
            self.clock,
            EventTag.OAUTH_CLIENT_DELETE,
            origin=uow.origin,
            actor_id=actor_id,
            details={"client_id": client_id},
        )
        return True

    # --- secrets ----------------------------------------------------------

    def secret_matches(self, secret: str, stored: str | None) -> bool:
        """Whether ``secret`` is the client's (constant time). With nothing stored (an unknown
        client, a public one) a digest is still computed and compared, so both cost the same."""
        if stored is None:
            keyed_hash_matches(self._hmac, secret, _SECRET_CONTEXT, self._digest(""))
            return False
        return keyed_hash_matches(self._hmac, secret, _SECRET_CONTEXT, stored)

    def _digest(self, secret: str) -> str:
        return keyed_hash(self._hmac, secret, _SECRET_CONTEXT)

    def _secret_expiry(self, issued_at: dt.datetime) -> dt.datetime:
        return issued_at + dt.timedelta(seconds=self.settings.oauth.client_secret_lifetime)


def _grants(metadata: ClientMetadata, *, public: bool) -> tuple[str, ...]:
    grants = _unique(metadata.grant_types) or DEFAULT_GRANTS
    if not set(grants) <= set(GRANT_TYPES):
        _refuse(f"grant_types must be among {', '.join(GRANT_TYPES)}")
    if "refresh_token" in grants and not {"authorization_code", DEVICE_CODE} & set(grants):
        _refuse("refresh_token needs authorization_code or the device_code grant")
    if public and "client_credentials" in grants:
        _refuse("a public client cannot use client_credentials: it has no credentials")
    return grants


def _check_algorithms_and_claims(metadata: ClientMetadata) -> None:
    for alg, name in ((metadata.id_token_alg, "id_token"), (metadata.access_token_alg, "access_token")):
        if alg not in TOKEN_ALGORITHMS:
            _refuse(f"{name}_signed_response_alg must be one of {', '.join(TOKEN_ALGORITHMS)}")
    if len(metadata.claims) > _MAX_CLAIMS:
        _refuse(f"at most {_MAX_CLAIMS} custom claims")
    for claim, field in metadata.claims.items():
        if not _CLAIM_NAME.fullmatch(claim) or claim in _RESERVED_CLAIMS:
            _refuse("a custom claim name must be lower-case and not a registered claim")
        if field not in CLAIM_FIELDS:
            _refuse(f"a custom claim's user field must be one of {', '.join(CLAIM_FIELDS)}")


def _derived_method(metadata: ClientMetadata) -> str:
    if metadata.public:
        return "none"
    if metadata.jwks is not None or metadata.jwks_uri is not None:
        return "private_key_jwt"
    return "client_secret_basic"


def _unique(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


MetadataError = Literal["invalid_redirect_uri", "invalid_client_metadata"]


def _refuse(message: str, error: MetadataError = "invalid_client_metadata") -> NoReturn:
    raise InvalidClientMetadata(error, message)


@contextlib.contextmanager
def _known_owner() -> Iterator[None]:
    """An owner that is no user (the foreign key refuses it) is refused as metadata."""
    try:
        yield
    except MissingReference:
        _refuse("owner_id: no such user")


def _split(uri: str, field: str, error: MetadataError) -> SplitResult:
    """``uri`` split, if it is an absolute URI without fragment or wildcard, of printable ASCII."""

    def refuse(message: str) -> NoReturn:
        _refuse(message, error)

    if not uri or len(uri) > _MAX_URI or not uri.isascii() or not uri.isprintable() or " " in uri:
        refuse(f"{field}: each must be an absolute URI of printable ASCII, at most {_MAX_URI} characters")
    if "#" in uri:
        refuse(f"{field}: a URI must not contain a fragment (RFC 6749 §3.1.2)")
    if "*" in uri:
        refuse(f"{field}: wildcards are not allowed; register each URI exactly")
    try:
        split = urlsplit(uri)
        split.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        refuse(f"{field}: a URI is malformed")
    if not split.scheme:
        refuse(f"{field}: each must be absolute (with a scheme)")
    return split


def _check_redirect_uri(uri: str, field: str) -> None:
    """RFC 6749 §3.1.2, RFC 8252 §7, RFC 9700 §2.1 and §4.1.3."""

    def refuse(message: str) -> NoReturn:
        _refuse(message, "invalid_redirect_uri")

    split = _split(uri, field, "invalid_redirect_uri")
    if split.username is not None or split.password is not None:
        refuse(f"{field}: a URI must not carry user information")
    if split.scheme == "https":
        if not split.hostname:
            refuse(f"{field}: an https URI needs a host")
        return
    if split.scheme == "http":
        if _loopback(uri) is None:
            refuse(f"{field}: http is only for the loopback addresses 127.0.0.1 and [::1] (RFC 8252 §7.3)")
        return
    if not _PRIVATE_SCHEME.fullmatch(split.scheme):
        refuse(f"{field}: use https, loopback http, or a private-use scheme like com.example.app (RFC 8252 §7.1)")
