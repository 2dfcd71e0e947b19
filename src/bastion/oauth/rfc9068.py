"""JWT access tokens (RFC 9068).

Every access token Bastion issues to a client is a JWT of ``typ``
``at+jwt`` (§2.1) signed with the client's ``access_token_alg``, carrying
(§2.2) ``iss`` (the issuer), ``sub`` (the user's id, or the ``client_id``
when the client acts as itself, §2.2 and RFC 6749 §4.4), ``aud`` (Bastion's
API: ``auth.audience``), ``client_id``, ``scope``, ``jti``, ``iat`` and
``exp``; for a user, ``auth_time``, ``acr`` and ``amr`` (§2.2.1); when the
token is bound to a DPoP key, ``cnf.jkt`` (RFC 9449 §6.1). ``gid`` names
the grant the token was issued under: revoking the grant (RFC 7009, reuse
of a code or refresh token, a withdrawn consent, a disabled user) refuses
the token at the next request (``bastion.access`` asks at every use).

The resource side (§4) is ``verify_access_token``: the signature, ``typ``
(so an ID token, ``typ`` ``JWT``, is never taken for an access token),
``iss``, ``aud`` and ``exp`` are the signer's checks.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bastion.oauth.service import OAuthService
from bastion.security import InvalidToken
from bastion.sessions.service import SESSION_CLIENT_ID

__all__ = ["ACCESS_TOKEN_TYP", "GRANT_CLAIM", "Authentication", "issue_access_token", "verify_access_token"]

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 - a JOSE typ, not a secret
# The claim naming the grant a token was issued under (Bastion's own API tokens carry "sid" instead).
GRANT_CLAIM = "gid"


@dataclass(frozen=True)
class Authentication:
    """How the user signed in, for ``auth_time``, ``acr`` and ``amr`` (OpenID Connect Core §2)."""

    auth_time: dt.datetime | None
    amr: Sequence[str]
    acr: str | None


def issue_access_token(
    oauth: OAuthService,
    *,
    client_id: str,
    alg: str,
    grant_id: uuid.UUID,
    user_id: uuid.UUID | None,
    scopes: Sequence[str],
    authentication: Authentication | None,
    jkt: str | None,
) -> str:
    """An access token (§2.2) for ``user_id`` (or the client itself, with None) under ``grant_id``."""
    claims: dict[str, Any] = {
        "sub": str(user_id) if user_id is not None else client_id,
        "client_id": client_id,
        "scope": " ".join(scopes),
        GRANT_CLAIM: str(grant_id),
    }
    if authentication is not None:
        if authentication.auth_time is not None:
            claims["auth_time"] = int(authentication.auth_time.timestamp())
        if authentication.amr:
            claims["amr"] = list(authentication.amr)
        if authentication.acr:
            claims["acr"] = authentication.acr
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}
    return oauth.signer.sign(
        claims,
        now=oauth.now(),
        ttl_seconds=oauth.config.access_token_ttl,
        typ=ACCESS_TOKEN_TYP,
        alg=alg,
        audience=oauth.settings.auth.audience,
    )


def verify_access_token(oauth: OAuthService, token: str) -> dict[str, Any] | None:
    """The claims of an OAuth access token issued here (§4); None when it is a token of another kind.

    InvalidToken when it is no valid token at all. Bastion's own API tokens
    (sessions) verify too but carry no ``gid``: None tells the caller to
    treat them as such.
    """
    claims = oauth.signer.verify(token, now=oauth.now(), typ=ACCESS_TOKEN_TYP, audience=oauth.settings.auth.audience)
    # Bastion's own (session) tokens: client_id "bastion" (sessions.SESSION_CLIENT_ID), no gid.
    if GRANT_CLAIM not in claims or claims.get("client_id") == SESSION_CLIENT_ID:
        return None
    if not isinstance(claims.get("client_id"), str) or not isinstance(claims.get("scope"), str):
        raise InvalidToken
    return claims
