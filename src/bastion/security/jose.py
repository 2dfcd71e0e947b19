"""Signed JWTs (RFC 7519) with EdDSA over Ed25519 (RFC 8037), on top of joserfc.

Verification follows the JWT Best Current Practices (RFC 8725): the header is
parsed here first and checked against a strict policy before joserfc sees the
token, with an explicit algorithm allowlist (§3.1), keys taken only from the
"signing" keyring and never from the token (§3.10: no ``jwk``, ``jku``,
``x5u``, ``x5c``, ``x5t``), explicit typing (§3.11), and issuer and audience
checks (§3.8, §3.9). Every failure raises the same :class:`InvalidToken`.
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwa import EdDSAAlgorithm
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry

from bastion.security.errors import InvalidToken, KeyringError
from bastion.security.keys import Keyring
from bastion.security.random import token_urlsafe

__all__ = ["ALLOWED_ALGORITHMS", "TokenSigner"]

ALLOWED_ALGORITHMS: tuple[str, ...] = ("EdDSA",)

_ALG = "EdDSA"
_TYP = "JWT"
# Allowlist rather than denylist: anything else (jwk, jku, x5u, x5c, x5t, crit,
# b64, zip, …) lets the token steer its own verification, so it is refused.
_ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})
_SIGNER_CLAIMS = frozenset({"iss", "aud", "iat", "nbf", "exp", "jti"})
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]+")
# Verified tokens remembered at most; the memory is emptied when full.
_REMEMBERED_TOKENS = 10_000


class _EdDSA(EdDSAAlgorithm):
    # RFC 9864 deprecates the polymorphic "EdDSA" name in favour of "Ed25519".
    # We keep "EdDSA" because deployed verifiers understand it, and the
    # ambiguity RFC 9864 removes cannot arise here: only Ed25519 keys are ever
    # loaded. Silenced per algorithm, not through a global warnings filter.
    security_warning = None  # type: ignore[assignment]  # joserfc types it str; None is what it checks


class _Registry(JWSRegistry):
    def __init__(self, algorithms: tuple[str, ...]) -> None:
        super().__init__(algorithms=algorithms)
        # Only the algorithms Bastion supports exist in this registry, so nothing
        # else (none, HS256, RS256, ES256…) can be selected, even by mistake.
        self.algorithms = {_ALG: _EdDSA()}


def _okp_key(kid: str, seed: bytes, *, private: bool) -> OKPKey:
    """Build the JWK of a "signing" keyring entry (RFC 8037 §2).

    The private JWK may only sign and the public one only verify
    (RFC 7517 §4.2, §4.3).
    """
    private_key = Ed25519PrivateKey.from_private_bytes(seed)
    return OKPKey.import_key(
        private_key if private else private_key.public_key(),
        {"kid": kid, "use": "sig", "key_ops": ["sign" if private else "verify"], "alg": _ALG},
    )


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two "alg" or "sub" members could be read differently by two parsers.
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate member")
    return dict(pairs)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode_segment(segment: str) -> Any:
    """Strictly decode a base64url JSON segment (RFC 7515 §2: no padding, no other alphabet)."""
    if not _SEGMENT_RE.fullmatch(segment):
        raise InvalidToken
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    return json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)


class TokenSigner:
    """Issue and verify JWTs for one issuer and audience with the "signing" keyring.

    New tokens are signed with the active key; tokens signed with a retired
    key keep verifying until they expire. The clock is always passed in.
    """

    def __init__(
        self,
        keyring: Keyring,
        *,
        issuer: str,
        audience: str,
        algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS,
        leeway_seconds: int = 0,
        key_check_seconds: float = 1.0,
    ) -> None:
        if keyring.purpose != "signing":
            raise ValueError("TokenSigner needs the 'signing' keyring")
        # Callers may narrow the allowlist, never widen it (ASVS V9.1.2).
        if not algorithms or not set(algorithms) <= set(ALLOWED_ALGORITHMS):
            raise ValueError(f"algorithms must be a non-empty subset of {ALLOWED_ALGORITHMS}")
        if leeway_seconds < 0:
            raise ValueError("leeway_seconds must not be negative")
        self._keyring = keyring
        self._issuer = issuer
        self._audience = audience
        self._algorithms = algorithms
        self._leeway = leeway_seconds
        self._registry = _Registry(algorithms=algorithms)
        # Derived from the keyring as it was at generation ``_generation``:
        # parsed keys per kid, and tokens whose signature verified. All of it
        # is dropped when the keyring changes, so a removed key (a leaked
        # one) verifies nothing from then on, remembered tokens included.
        self._private_keys: dict[str, OKPKey] = {}
        self._public_keys: dict[str, OKPKey] = {}
        self._verified: dict[str, dict[str, Any]] = {}
        self._generation = keyring.generation
        # Another process (`bastion keys remove`) changes the file, not this
        # object: look at the file at most this often (a stat, off the
        # signature path).
        self._key_check_seconds = key_check_seconds
        self._next_key_check = 0.0

    def sign(self, claims: dict[str, Any], *, now: int, ttl_seconds: int) -> str:
        """Return a JWT of ``claims`` valid from ``now`` for ``ttl_seconds``.

        ``claims`` must contain ``sub`` and must not contain the claims the
        signer sets itself: ``iss``, ``aud``, ``iat``, ``nbf``, ``exp`` and a
        random ``jti``.
        """
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        if _SIGNER_CLAIMS & claims.keys():
            raise ValueError(f"claims {sorted(_SIGNER_CLAIMS & claims.keys())} are set by the signer")
        if "sub" not in claims:
            raise ValueError("claims must contain 'sub'")
        payload = {
            **claims,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
            "jti": token_urlsafe(16),
        }
        kid = self._keyring.active_kid
        header = {"alg": _ALG, "kid": kid, "typ": _TYP}
        if kid not in self._private_keys:
            self._private_keys[kid] = _okp_key(kid, self._keyring.secret(kid), private=True)
        return jwt.encode(header, payload, self._private_keys[kid], registry=self._registry)

    def verify(self, token: str, *, now: int) -> dict[str, Any]:
        """Return the claims of ``token`` if it is acceptable at ``now``, else raise InvalidToken.

        A token whose signature verified once is remembered (the exact
        string, so nothing unverified can match), and only its time claims
        are checked again: the signature check was a third of an
        authenticated request. A remembered verification holds only while
        the keyring is unchanged (``_current``): once a key is removed, here
        or by another process, its tokens are refused within
        ``key_check_seconds``.
        """
        self._current()
        try:
            claims = self._verified.get(token)
            if claims is None:
                claims = self._verify(token, now)
                if len(self._verified) >= _REMEMBERED_TOKENS:
                    self._verified.clear()
                self._verified[token] = claims
            else:
                self._check_times(claims, now)
            return dict(claims)
        except (JoseError, KeyringError, ValueError, TypeError):
            raise InvalidToken from None

    def _current(self) -> None:
        """Forget what was derived from keys that may no longer be there."""
        now = time.monotonic()
        if now >= self._next_key_check:
            self._next_key_check = now + self._key_check_seconds
            self._keyring.refresh()
        if self._keyring.generation != self._generation:
            self._generation = self._keyring.generation
            self._private_keys.clear()
            self._public_keys.clear()
            self._verified.clear()

    def public_jwks(self) -> dict[str, Any]:
        """Return the JWK Set (RFC 7517 §5) of every verification key, without private parts."""
        return {"keys": [self._public_key(info.kid).as_dict(private=False) for info in self._keyring.kids()]}

    def _verify(self, token: str, now: int) -> dict[str, Any]:
        segments = token.split(".")
        if len(segments) != 3:
            raise InvalidToken
        header = _decode_segment(segments[0])
        # joserfc re-parses the payload with the lenient json module; refusing
        # duplicate members and NaN here first means both readings agree.
        _decode_segment(segments[1])
        if not isinstance(header, dict) or not header.keys() <= _ALLOWED_HEADERS:
            raise InvalidToken
        if header.get("alg") not in self._algorithms or header.get("typ") != _TYP:
            raise InvalidToken
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken
        key = self._public_key(kid)
        if key.get("use") != "sig" or "verify" not in (key.get("key_ops") or ()):
            raise InvalidToken
        claims = jwt.decode(token, key, algorithms=self._algorithms, registry=self._registry).claims
        self._check_claims(claims, now)
        return claims

    def _check_claims(self, claims: dict[str, Any], now: int) -> None:
        jwt.JWTClaimsRegistry(
            now=now,
            leeway=self._leeway,
            iss={"essential": True, "value": self._issuer},
            aud={"essential": True, "value": self._audience},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        ).validate(claims)

    def _check_times(self, claims: dict[str, Any], now: int) -> None:
        """The time claims of a token verified before (every other claim was, and cannot change)."""
        if claims["exp"] <= now - self._leeway:
            raise InvalidToken
        if claims.get("nbf", now) > now + self._leeway or claims["iat"] > now + self._leeway:
            raise InvalidToken

    def _public_key(self, kid: str) -> OKPKey:
        # Cached per kid (material for a kid never changes); only kids the
        # keyring knows are cached, so forged kids cannot grow the cache.
        if kid not in self._public_keys:
            self._public_keys[kid] = _okp_key(kid, self._keyring.secret(kid), private=False)
        return self._public_keys[kid]
