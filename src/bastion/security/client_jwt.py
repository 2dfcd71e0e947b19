"""A client's JWK Set, checked when it is registered or fetched (RFC 7517 §5, RFC 7591 §2).

Assertions signed with it are verified by ``bastion.security.verify_jwt_with_jwks``;
this only says, at registration, whether every key of the set is one that
verification can use: RSA of 2048 bits or more, P-256 or Ed25519, public
members only, kids unique when there are several.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey

from bastion.security.errors import InvalidToken

__all__ = ["public_jwks_problem"]

_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_MIN_RSA_BITS = 2048
_MAX_KEYS = 16


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
