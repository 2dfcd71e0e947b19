"""Interim: JWTs signed by others, verified against the JWK Set they published.

This module stands in for ``bastion.security.verify_jwt_with_jwks`` (the
keys work) until that lands, with the same signature, and goes away then.
The header policy is RFC 8725's, as in ``jose.py``: an explicit algorithm
allowlist (§3.1), only ``alg``, ``kid`` and ``typ`` in the header (§3.10: no
``jwk``, ``jku``, ``x5u``, ``x5c``, ``crit``), the key taken from the given
JWK Set by ``kid`` and never from the token, and its type checked against
the algorithm (RSA ≥ 2048 bits for RS256, P-256 for ES256, Ed25519 for
EdDSA). Every failure is the same :class:`InvalidToken`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Collection
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwa import EdDSAAlgorithm
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from bastion.security.errors import InvalidToken

__all__ = ["FOREIGN_ALGORITHMS", "public_jwks_problem", "verify_jwt_with_jwks"]

FOREIGN_ALGORITHMS = ("RS256", "ES256", "EdDSA")
_ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]+")
_MIN_RSA_BITS = 2048
_MAX_KEYS = 16


class _EdDSA(EdDSAAlgorithm):
    security_warning = None  # type: ignore[assignment]  # see jose.py: only Ed25519 keys are accepted


class _Registry(JWSRegistry):
    def __init__(self, algorithms: tuple[str, ...]) -> None:
        super().__init__(algorithms=list(algorithms))
        self.algorithms = {name: (_EdDSA() if name == "EdDSA" else JWSRegistry.algorithms[name]) for name in algorithms}


def _strict_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate member")
    return dict(pairs)


def _segment(segment: str) -> Any:
    if not _SEGMENT_RE.fullmatch(segment):
        raise InvalidToken
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    return json.loads(raw.decode("utf-8"), object_pairs_hook=_strict_pairs)


def _key_for(jwks: dict[str, Any], alg: str, kid: object) -> RSAKey | ECKey | OKPKey:
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not 0 < len(keys) <= _MAX_KEYS:
        raise InvalidToken
    if kid is None:
        # Without a kid only a set of one key is unambiguous.
        if len(keys) != 1:
            raise InvalidToken
        found = keys
    else:
        found = [key for key in keys if isinstance(key, dict) and key.get("kid") == kid]
    if len(found) != 1 or not isinstance(found[0], dict):
        raise InvalidToken
    member = found[0]
    if _PRIVATE_MEMBERS & member.keys() or member.get("use", "sig") != "sig":
        raise InvalidToken
    if member.get("alg", alg) != alg:
        raise InvalidToken
    if alg == "RS256" and member.get("kty") == "RSA":
        key = RSAKey.import_key(member)
        public = key.raw_value
        if not isinstance(public, RSAPublicKey | RSAPrivateKey) or public.key_size < _MIN_RSA_BITS:
            raise InvalidToken
        return key
    if alg == "ES256" and member.get("kty") == "EC" and member.get("crv") == "P-256":
        return ECKey.import_key(member)
    if alg == "EdDSA" and member.get("kty") == "OKP" and member.get("crv") == "Ed25519":
        return OKPKey.import_key(member)
    raise InvalidToken


def verify_jwt_with_jwks(
    token: str,
    jwks: dict[str, Any],
    *,
    algorithms: Collection[str],
    typ: str | None,
    now: int,
    leeway: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (header, claims) of ``token`` if one of ``jwks``' keys signed it and it is current.

    ``exp`` is required; ``nbf`` and ``iat``, when present, must not be in
    the future. The caller checks ``iss``, ``sub``, ``aud`` and ``jti``.
    ``typ=None`` accepts a token without ``typ`` (or ``JWT``).
    """
    allowed = tuple(alg for alg in FOREIGN_ALGORITHMS if alg in algorithms)
    try:
        segments = token.split(".")
        if len(segments) != 3 or not allowed:
            raise InvalidToken
        header = _segment(segments[0])
        claims = _segment(segments[1])
        if not isinstance(header, dict) or not isinstance(claims, dict) or not header.keys() <= _ALLOWED_HEADERS:
            raise InvalidToken
        alg = header.get("alg")
        if alg not in allowed:
            raise InvalidToken
        if header.get("typ", "JWT" if typ is None else None) != (typ or "JWT"):
            raise InvalidToken
        key = _key_for(jwks, alg, header.get("kid"))
        verified = jwt.decode(token, key, algorithms=[alg], registry=_Registry((alg,))).claims
        exp = verified.get("exp")
        if not isinstance(exp, int) or isinstance(exp, bool) or exp <= now - leeway:
            raise InvalidToken
        for name in ("nbf", "iat"):
            value = verified.get(name)
            if value is not None and (not isinstance(value, int | float) or value > now + leeway):
                raise InvalidToken
        return dict(header), dict(verified)
    except (JoseError, ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise InvalidToken from None


def public_jwks_problem(jwks: dict[str, Any]) -> str | None:
    """Why ``jwks`` is not a JWK Set of public signature keys Bastion can verify with, or None.

    At registration: 1 to 16 keys, each RSA (≥ 2048 bits), P-256 or Ed25519,
    without private members (RFC 7517 §5, RFC 7518 §6), kids unique.
    """
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not 0 < len(keys) <= _MAX_KEYS:
        return f"a JWK Set needs between 1 and {_MAX_KEYS} keys"
    kids = [key.get("kid") for key in keys if isinstance(key, dict)]
    if len(kids) != len(keys):
        return "each key must be a JSON object"
    if len(keys) > 1 and (None in kids or len(set(kids)) != len(kids)):
        return "with several keys, each needs a distinct kid"
    for key in keys:
        if _PRIVATE_MEMBERS & key.keys():
            return "a key has private or symmetric members: publish public keys only"
        alg = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}.get(key.get("kty"))
        try:
            if alg is None:
                raise InvalidToken
            _key_for({"keys": [key]}, key.get("alg", alg), key.get("kid"))
        except (InvalidToken, JoseError, ValueError, TypeError, KeyError):
            return "each key must be an RSA (2048 bits or more), P-256 or Ed25519 signature key"
    return None
