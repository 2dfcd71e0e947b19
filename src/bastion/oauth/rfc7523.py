"""Client authentication at the token-style endpoints (RFC 6749 §2.3, RFC 7523 §2.2 and §3).

A client authenticates with the one method it registered
(``token_endpoint_auth_method``, RFC 7591 §2), and only with it:

- ``client_secret_basic``: HTTP Basic with the client id and secret, each
  ``application/x-www-form-urlencoded`` first (RFC 6749 §2.3.1);
- ``client_secret_post``: ``client_id`` and ``client_secret`` in the body;
- ``private_key_jwt``: a JWT signed with one of the client's registered keys
  (``client_assertion``, ``client_assertion_type`` =
  ``urn:ietf:params:oauth:client-assertion-type:jwt-bearer``). RFC 7523 §3
  as hardened by RFC 9700 §2.3 and draft-ietf-oauth-rfc7523bis: ``iss`` and
  ``sub`` are the client id, ``aud`` is exactly the issuer (a single string,
  not the token endpoint URL: an assertion made for one endpoint or server
  cannot be replayed at another), ``exp`` is required and at most five
  minutes ahead, and its ``jti`` is used once (``OAuthReplay``);
- ``none``: a public client names itself with ``client_id`` only.

Using two methods in one request is an ``invalid_request`` (RFC 6749 §2.3:
"MUST NOT use more than one authentication method in each request"). Any
other failure (unknown client, wrong secret, another client's secret, an
expired secret, a method other than the registered one, a bad assertion) is
the same ``invalid_client`` with status 401, and changes nothing but this: a
right secret past its ``secret_expires_at`` is recorded (``oauth:client:auth``,
failure, reason ``secret_expired``), since it is the client's owner, not an
attacker, who needs to hear of it. The secret is compared before the expiry
is looked at, so an expired secret costs what a wrong one does up to there.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any
from urllib.parse import unquote_plus

import orjson
from fastapi import Request
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bastion.audit import EventTag, Outcome, record_event
from bastion.db.database import Transaction
from bastion.oauth.clients import TOKEN_ALGORITHMS, Client, ClientRegistry, client_and_secret
from bastion.oauth.errors import OAuthError
from bastion.oauth.forms import Params
from bastion.oauth.models import OAuthReplay
from bastion.oauth.service import OAuthService
from bastion.oauth.ssrf import fetch_jwks
from bastion.security import InvalidToken, hash_token, verify_jwt_with_jwks
from bastion.uow import origin_of

__all__ = ["ASSERTION_TYPE", "MAX_ASSERTION_LIFETIME", "authenticate_client"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# RFC 7523 §3 item 4 lets the server bound exp; a short life bounds the replay table too.
MAX_ASSERTION_LIFETIME = 300
# The clocks of the client and the server may differ by this much.
CLOCK_LEEWAY = 30
_MAX_JTI = 256

# INSERT … ON CONFLICT DO NOTHING RETURNING: of two requests with one jti, one
# inserts (and gets the row back), the other finds the key taken and gets none.
_SEEN = {
    "postgresql": postgresql_insert(OAuthReplay).on_conflict_do_nothing().returning(OAuthReplay.jti_hash),
    "sqlite": sqlite_insert(OAuthReplay).on_conflict_do_nothing().returning(OAuthReplay.jti_hash),
}


def _invalid_client() -> OAuthError:
    return OAuthError("invalid_client", "Client authentication failed.", status=401)


async def authenticate_client(request: Request, params: Params, db: Transaction, oauth: OAuthService) -> Client:
    """The client this request authenticates as, or ``OAuthError`` (RFC 6749 §5.2).

    A verified assertion's ``jti`` is spent in ``db``: the caller commits
    that transaction also when it then refuses the request (as the unit of
    work does for a Problem), or the assertion could be presented again.
    (A transaction of its own would need a second pooled connection per
    request while the first is held: under load, a pool-exhaustion deadlock.)
    """
    client_id, method, secret, assertion = _presented(request, params)
    registry = ClientRegistry.of(request.app.state)
    found = await client_and_secret(db, client_id)
    if found is None or found[0].token_endpoint_auth_method != method:
        if secret is not None:
            registry.secret_matches(secret, None)  # an unknown client costs what a wrong secret does
        raise _invalid_client()
    client, stored = found
    if method in {"client_secret_basic", "client_secret_post"}:
        if secret is None or not registry.secret_matches(secret, stored):
            raise _invalid_client()
        if client.secret_expired(oauth.clock.now()):
            _record_expired(request, db, oauth, client)
            raise _invalid_client()
    elif method == "private_key_jwt":
        assert assertion is not None  # noqa: S101 - the method is chosen by its presence above
        await _check_assertion(db, client, assertion, oauth)
    return client


def _record_expired(request: Request, db: Transaction, oauth: OAuthService, client: Client) -> None:
    """The audit event of a right secret refused for its age (committed with the refusal: OAuthError is a Problem)."""
    assert client.secret_expires_at is not None  # noqa: S101 - secret_expired says so
    record_event(
        db,
        oauth.clock,
        EventTag.OAUTH_CLIENT_AUTH,
        origin=origin_of(request),
        outcome=Outcome.FAILURE,
        details={
            "client_id": client.id,
            "method": client.token_endpoint_auth_method,
            "reason": "secret_expired",
            "expired_at": client.secret_expires_at.isoformat(),
        },
    )


def _presented(request: Request, params: Params) -> tuple[str, str, str | None, str | None]:
    """(client_id, method, secret, assertion) of the one method the request uses."""
    basic = _basic_credentials(request)
    secret = params.get("client_secret")
    assertion = params.get("client_assertion")
    if sum(given is not None for given in (basic, secret, assertion)) > 1:
        raise OAuthError("invalid_request", "Use exactly one client authentication method.")
    if (assertion is None) != (params.get("client_assertion_type") is None):
        raise OAuthError("invalid_request", "client_assertion and client_assertion_type go together.")
    named = params.get("client_id")
    if basic is not None:
        if named is not None and named != basic[0]:
            raise OAuthError("invalid_request", "client_id differs from the authenticated client.")
        return basic[0], "client_secret_basic", basic[1], None
    if secret is not None:
        return named or "", "client_secret_post", secret, None
    if assertion is not None:
        if params.get("client_assertion_type") != ASSERTION_TYPE:
            raise _invalid_client()
        return named or _unverified_subject(assertion), "private_key_jwt", None, assertion
    return named or "", "none", None, None


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    """(client_id, secret) of an ``Authorization: Basic`` header (RFC 6749 §2.3.1, RFC 7617), or None.

    A malformed Basic header is a failed authentication, not an absent one.
    """
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _invalid_client() from None
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id or not secret:
        raise _invalid_client()
    return unquote_plus(client_id), unquote_plus(secret)


def _unverified_subject(assertion: str) -> str:
    """The ``sub`` the assertion claims, only to find whose keys to check it with."""
    segments = assertion.split(".")
    if len(segments) != 3:
        raise _invalid_client()
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(segments[1] + "=" * (-len(segments[1]) % 4)))
    except (binascii.Error, ValueError):
        raise _invalid_client() from None
    subject = claims.get("sub") if isinstance(claims, dict) else None
    if not isinstance(subject, str):
        raise _invalid_client()
    return subject


async def _check_assertion(tx: Transaction, client: Client, assertion: str, oauth: OAuthService) -> None:
    """RFC 7523 §3 for a client assertion, then spend its ``jti`` (one winner among concurrent uses)."""
    now = oauth.now()
    claims = _verified_claims(client, assertion, await _jwks_of(client, oauth), now)
    if claims is None and client.jwks_uri is not None:
        # The client may have rotated its keys since we cached them (RFC 7517 §5, OpenID Core §10.1.1).
        claims = _verified_claims(client, assertion, await _jwks_of(client, oauth, refresh=True), now)
    if claims is None:
        raise _invalid_client()
    if claims.get("iss") != client.id or claims.get("sub") != client.id or claims.get("aud") != oauth.issuer:
        raise _invalid_client()
    exp, jti = claims["exp"], claims.get("jti")
    if exp > now + MAX_ASSERTION_LIFETIME + CLOCK_LEEWAY:
        raise _invalid_client()
    if not isinstance(jti, str) or not 0 < len(jti) <= _MAX_JTI:
        raise _invalid_client()
    expires_at = dt.datetime.fromtimestamp(exp + CLOCK_LEEWAY, dt.UTC)
    seen = await tx.changed(
        _SEEN[tx.dialect.name],
        {"kind": "assertion", "jti_hash": hash_token(f"{client.id}\n{jti}"), "expires_at": expires_at},
    )
    if seen is None:
        raise _invalid_client()


def _verified_claims(client: Client, assertion: str, jwks: dict[str, Any] | None, now: int) -> dict[str, Any] | None:
    if jwks is None:
        return None
    try:
        _, claims = verify_jwt_with_jwks(
            assertion, jwks, algorithms=TOKEN_ALGORITHMS, typ=None, now=now, leeway=CLOCK_LEEWAY
        )
    except InvalidToken:
        return None
    return claims


async def _jwks_of(client: Client, oauth: OAuthService, *, refresh: bool = False) -> dict[str, Any] | None:
    if client.jwks is not None:
        return dict(client.jwks)
    if client.jwks_uri is None:
        return None
    return await fetch_jwks(client.jwks_uri, oauth.settings, refresh=refresh)
