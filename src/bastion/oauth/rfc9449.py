"""OAuth 2.0 Demonstrating Proof of Possession (DPoP, RFC 9449).

A client proves it holds a private key by sending, with each request, a
``DPoP`` header: a JWT of ``typ`` ``dpop+jwt`` signed with that key, its
public JWK in the header (§4.2). ``bastion.security.verify_dpop_proof``
checks the header (no private key members, an allowed algorithm) and the
signature; this module checks what the proof says (§4.3):

- ``htm`` is the request's method and ``htu`` its URL, compared without
  query and fragment against the issuer-based URL of the route (behind a
  proxy the request's own Host header is not to be trusted);
- ``iat`` is within ``oauth.dpop_window`` seconds of now (§11.1);
- ``jti`` is used once (§11.1): an ``oauth_replays`` row, inserted with ``ON
  CONFLICT DO NOTHING`` so that of two concurrent replays exactly one gets in;
- ``ath`` is the hash of the access token at a resource (§4.3 step 11);
- with ``oauth.dpop_nonce`` on, ``nonce`` is one Bastion handed out
  (§8, §9): a keyed hash of the current time window, so every worker and
  instance agrees without shared state; the previous window's nonce still
  passes, so a nonce is good for one to two windows.

At the token endpoint (§5) a valid proof binds the access token to the key
(``cnf.jkt``, §6.1), and the refresh token of a public client too (§5: a
confidential client's refresh token is already bound to its authentication).
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from sqlalchemy import bindparam
from sqlalchemy.dialects import postgresql, sqlite

from bastion.audit import EventTag, Outcome, record_event
from bastion.db.database import Transaction
from bastion.oauth.errors import OAuthError
from bastion.oauth.housekeeping import purge_expired
from bastion.oauth.models import OAuthReplay
from bastion.oauth.service import OAuthService
from bastion.security import BlindIndex, InvalidToken, hash_token, s256, verify_dpop_proof
from bastion.uow import origin_of

__all__ = ["DPOP_ALGORITHMS", "Proof", "check_proof", "current_nonce", "normalise_htu"]

# RFC 9449 §4.3 step 5: asymmetric algorithms only; these three are what clients use.
DPOP_ALGORITHMS = ("ES256", "EdDSA", "RS256")
_MAX_JTI = 256

_REPLAY_VALUES: dict[str, Any] = {
    "kind": bindparam("kind"),
    "jti_hash": bindparam("jti_hash"),
    "expires_at": bindparam("expires_at"),
}
_REPLAY = {
    "postgresql": postgresql.insert(OAuthReplay).values(_REPLAY_VALUES).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(OAuthReplay).values(_REPLAY_VALUES).on_conflict_do_nothing(),
}


class Proof:
    """A checked DPoP proof: the thumbprint of its key (RFC 7638) and its claims."""

    def __init__(self, jkt: str, claims: dict[str, Any]) -> None:
        self.jkt = jkt
        self.claims = claims


def normalise_htu(url: str) -> str | None:
    """``url`` without query and fragment, scheme and host lower-cased (§4.3 step 9, RFC 3986 §6.2.2)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("https", "http") or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path or '/'}"


def current_nonce(request: Request, oauth: OAuthService, *, windows_ago: int = 0) -> str:
    """The DPoP nonce of the current time window (or of one ``windows_ago``)."""
    window = oauth.now() // oauth.config.dpop_window - windows_ago
    return BlindIndex(request.app.state.keys.hmac).digest(str(window), "oauth.dpop-nonce")[:32]


def nonce_headers(request: Request, oauth: OAuthService) -> dict[str, str]:
    """``DPoP-Nonce`` to send with every answer while nonces are on (§8.2)."""
    return {"DPoP-Nonce": current_nonce(request, oauth)} if oauth.config.dpop_nonce else {}


async def check_proof(
    request: Request,
    tx: Transaction,
    oauth: OAuthService,
    *,
    access_token: str | None = None,
) -> Proof | None:
    """The request's DPoP proof, checked (§4.3); None when it has none.

    ``OAuthError`` ``invalid_dpop_proof`` for a bad one, ``use_dpop_nonce``
    when a nonce is required and missing or stale. ``access_token`` is the
    token of a resource request, whose hash the proof must carry (``ath``).
    """
    headers = request.headers.getlist("dpop")
    if not headers:
        return None
    if len(headers) != 1 or len(headers[0]) > 4096:  # §4.3 steps 1 and 2
        raise _invalid("Send exactly one DPoP proof.")
    try:
        verified = verify_dpop_proof(headers[0], algorithms=DPOP_ALGORITHMS)
    except InvalidToken:
        raise _invalid("The DPoP proof is invalid.") from None
    _, claims, jkt = verified
    now = oauth.now()
    htu = claims.get("htu")
    expected = normalise_htu(oauth.url(request.url.path))
    if claims.get("htm") != request.method or not isinstance(htu, str) or normalise_htu(htu) != expected:
        raise _invalid("The DPoP proof is for another request.")
    iat = claims.get("iat")
    if not isinstance(iat, int) or isinstance(iat, bool) or abs(now - iat) > oauth.config.dpop_window:
        raise _invalid("The DPoP proof is too old or from the future.")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= _MAX_JTI:
        raise _invalid("The DPoP proof has no valid jti.")
    if access_token is not None and claims.get("ath") != s256(access_token):
        raise _invalid("The DPoP proof is not bound to this access token.")
    if oauth.config.dpop_nonce and claims.get("nonce") not in (
        current_nonce(request, oauth),
        current_nonce(request, oauth, windows_ago=1),
    ):
        raise OAuthError(
            "use_dpop_nonce", "Use the DPoP nonce this server provides.", headers=nonce_headers(request, oauth)
        )
    await purge_expired(tx, oauth)
    # The same jti under another key is another proof; the pair is what is single-use.
    fresh = await tx.execute(
        _REPLAY[tx.dialect.name],
        {
            "kind": "dpop",
            "jti_hash": hash_token(f"{jkt}:{jti}"),
            "expires_at": oauth.clock.now() + dt.timedelta(seconds=2 * oauth.config.dpop_window),
        },
    )
    if not fresh:
        record_event(
            tx,
            oauth.clock,
            EventTag.OAUTH_DPOP_REPLAY,
            origin=origin_of(request),
            outcome=Outcome.DENIED,
            details={"jkt": jkt, "path": request.url.path},
        )
        raise _invalid("The DPoP proof was used before.")
    return Proof(jkt, claims)


def _invalid(description: str) -> OAuthError:
    return OAuthError("invalid_dpop_proof", description)
