"""INTERIM (federation branch only): verifying JWTs signed by others, until the keys branch lands.

The keys helper adds ``bastion.security.verify_jwt_with_jwks`` and
``bastion.security.s256`` with these exact signatures; when main has them,
``bastion.oauth.providers`` imports those and this module is deleted.

RFC 8725 §3.1 (an algorithm allowlist given by the caller), §3.10 (keys only
from the given JWKS, found by ``kid``; a token's own ``jwk``/``jku``/``x5*``
headers are refused), §3.11 (explicit ``typ`` when asked for); RFC 7519
§4.1.4/§4.1.5 (``exp``, ``nbf``, with a leeway). Every failure raises
``InvalidToken``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Collection
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bastion.security.errors import InvalidToken

__all__ = ["s256", "verify_jwt_with_jwks"]

_ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})
_ASYMMETRIC = frozenset({"RS256", "PS256", "ES256", "EdDSA"})


def s256(value: str) -> str:
    """base64url(SHA-256(ASCII(value))) without padding (RFC 7636 §4.2)."""
    digest = hashlib.sha256(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _segment(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken from None
    if not isinstance(value, dict):
        raise InvalidToken
    return value


def verify_jwt_with_jwks(
    token: str,
    jwks: dict[str, Any],
    *,
    algorithms: Collection[str],
    typ: str | None,
    now: int,
    leeway: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of ``token`` signed by a key of ``jwks``; ``InvalidToken`` otherwise."""
    allowed = set(algorithms) & _ASYMMETRIC
    parts = token.split(".")
    if len(parts) != 3 or not allowed:
        raise InvalidToken
    header = _segment(parts[0])
    if set(header) - _ALLOWED_HEADERS or header.get("alg") not in allowed:
        raise InvalidToken
    if typ is not None and str(header.get("typ", "")).lower() not in {typ.lower(), f"application/{typ}".lower()}:
        raise InvalidToken
    keys = [key for key in jwks.get("keys", []) if isinstance(key, dict) and key.get("use", "sig") == "sig"]
    kid = header.get("kid")
    if kid is not None:
        keys = [key for key in keys if key.get("kid") == kid]
    elif len(keys) != 1:
        raise InvalidToken
    keys = [key for key in keys if key.get("alg", header["alg"]) == header["alg"]]
    if len(keys) != 1:
        raise InvalidToken
    try:
        key = KeySet.import_key_set({"keys": keys}).keys[0]
        if key.is_private:
            raise InvalidToken
        signed = jws.deserialize_compact(token, key, algorithms=[header["alg"]])
        claims = json.loads(signed.payload)
    except (JoseError, ValueError, TypeError):
        raise InvalidToken from None
    if not isinstance(claims, dict):
        raise InvalidToken
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not isinstance(exp, int) or exp + leeway <= now:
        raise InvalidToken
    if nbf is not None and (not isinstance(nbf, int) or nbf - leeway > now):
        raise InvalidToken
    return header, claims
