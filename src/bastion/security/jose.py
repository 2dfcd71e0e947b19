"""Signed JWTs (RFC 7519): EdDSA over Ed25519 (RFC 8037), RS256 and ES256 (RFC 7518 §3), on joserfc.

Verification follows the JWT Best Current Practices (RFC 8725): the header is
parsed here first and checked against a strict policy before joserfc sees the
token, with an explicit algorithm allowlist (§3.1), duplicate JSON members
refused (§3.2 in spirit: two parsers must not read two tokens), keys taken
only from our keyrings (or, for tokens signed by others, from the JWKS the
caller trusts) and never from the token (§3.10: no ``jwk``, ``jku``, ``x5u``,
``x5c``, ``x5t``), explicit typing (§3.11: an ID token, ``typ`` "JWT", is
never accepted where an access token, ``typ`` "at+jwt", is expected), and
issuer and audience checks (§3.8, §3.9). Every failure raises the same
:class:`InvalidToken`.

Three entry points:

- :class:`TokenSigner` signs and verifies Bastion's own tokens (access
  tokens, ID tokens, logout tokens) with the keyrings "signing" (EdDSA),
  "signing-rs256" and "signing-es256".
- :func:`verify_jwt_with_jwks` verifies a token signed by someone else (a
  client's ``private_key_jwt`` assertion, RFC 7523; another provider's ID
  token) with a key of the JWK Set the caller got for that party.
- :func:`verify_dpop_proof` verifies a DPoP proof (RFC 9449 §4.3), whose
  key is the public ``jwk`` of its own header, by design.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Collection, Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwa import EdDSAAlgorithm
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from bastion.security.errors import InvalidToken, KeyringError
from bastion.security.keys import Keyring
from bastion.security.random import token_urlsafe

__all__ = [
    "ALLOWED_ALGORITHMS",
    "FOREIGN_ALGORITHMS",
    "KEYRING_PURPOSES",
    "TokenSigner",
    "half_hash",
    "jwk_thumbprint",
    "s256",
    "verify_dpop_proof",
    "verify_jwt_with_jwks",
]

# What Bastion signs with, and the keyring purpose holding each algorithm's keys.
KEYRING_PURPOSES: Mapping[str, str] = {"EdDSA": "signing", "RS256": "signing-rs256", "ES256": "signing-es256"}
ALLOWED_ALGORITHMS: tuple[str, ...] = tuple(KEYRING_PURPOSES)
# What others may sign with (client assertions, provider ID tokens, DPoP
# proofs): asymmetric only, never "none" nor an HMAC (whose "key" an attacker
# would pick from our public keys, RFC 8725 §2.1).
FOREIGN_ALGORITHMS: tuple[str, ...] = ("EdDSA", "RS256", "PS256", "ES256", "ES384")

_KTY = {"EdDSA": "OKP", "RS256": "RSA", "PS256": "RSA", "ES256": "EC", "ES384": "EC"}
_CRV = {"EdDSA": "Ed25519", "ES256": "P-256", "ES384": "P-384"}
# Allowlist rather than denylist: anything else (jwk, jku, x5u, x5c, x5t, crit,
# b64, zip, …) lets the token steer its own verification, so it is refused.
_ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})
# Tokens signed by others may also carry a certificate thumbprint (Microsoft
# Entra ID's ID tokens do): a hint naming a key, never one, and ignored here,
# since the key is chosen by kid from the JWKS the caller trusts.
_FOREIGN_HEADERS = _ALLOWED_HEADERS | {"x5t", "x5t#S256"}
_DPOP_HEADERS = frozenset({"alg", "typ", "jwk"})
_DPOP_TYP = "dpop+jwt"
# Members of a private JWK (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_SIGNER_CLAIMS = frozenset({"iss", "aud", "iat", "nbf", "exp", "jti"})
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]+")
# A header of ours is ~80 characters and a DPoP header with an RSA-4096 key
# ~800; a token carries at most a few claims. Bigger is refused before parsing.
_MAX_HEADER_CHARS = 2048
_MAX_TOKEN_CHARS = 16 * 1024
_MIN_RSA_BITS = 2048
# Verified tokens remembered at most; the memory is emptied when full.
_REMEMBERED_TOKENS = 10_000

_Key = OKPKey | RSAKey | ECKey


class _EdDSA(EdDSAAlgorithm):
    # RFC 9864 deprecates the polymorphic "EdDSA" name in favour of "Ed25519".
    # We keep "EdDSA" because deployed verifiers understand it, and the
    # ambiguity RFC 9864 removes cannot arise here: only Ed25519 keys are ever
    # loaded. Silenced per algorithm, not through a global warnings filter.
    security_warning = None  # type: ignore[assignment]  # joserfc types it str; None is what it checks


class _Registry(JWSRegistry):
    def __init__(self, algorithms: Collection[str]) -> None:
        super().__init__(algorithms=list(algorithms))
        # _split has bounded the header already; joserfc's own 512-byte
        # bound would refuse a DPoP header carrying an RSA key.
        self.max_header_length = _MAX_HEADER_CHARS
        # Only the named algorithms exist in this registry, so nothing else
        # (none, HS256, …) can be selected, even by mistake.
        self.algorithms = {name: _EdDSA() if name == "EdDSA" else JWSRegistry.algorithms[name] for name in algorithms}


def _okp_key(kid: str, seed: bytes, *, private: bool) -> OKPKey:
    """Build the JWK of a "signing" keyring entry (RFC 8037 §2).

    The private JWK may only sign and the public one only verify
    (RFC 7517 §4.2, §4.3).
    """
    private_key = Ed25519PrivateKey.from_private_bytes(seed)
    return OKPKey.import_key(
        private_key if private else private_key.public_key(),
        {"kid": kid, "use": "sig", "key_ops": ["sign" if private else "verify"], "alg": "EdDSA"},
    )


def _keyring_key(alg: str, kid: str, material: bytes, *, private: bool) -> _Key:
    """The JWK of a keyring entry for ``alg``: sign-only if private, verify-only if public."""
    if alg == "EdDSA":
        return _okp_key(kid, material, private=private)
    loaded = serialization.load_der_private_key(material, password=None)
    params = {"kid": kid, "use": "sig", "key_ops": ["sign" if private else "verify"], "alg": alg}
    cls: type[RSAKey] | type[ECKey] = RSAKey if alg == "RS256" else ECKey
    return cls.import_key(loaded if private else loaded.public_key(), params)  # type: ignore[arg-type]


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


def _split(token: str, allowed_headers: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWS, both strictly parsed; InvalidToken if malformed.

    joserfc re-parses the payload with the lenient json module; refusing
    duplicate members and NaN here first means both readings agree.
    """
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
        raise InvalidToken
    segments = token.split(".")
    if len(segments) != 3 or len(segments[0]) > _MAX_HEADER_CHARS:
        raise InvalidToken
    header = _decode_segment(segments[0])
    claims = _decode_segment(segments[1])
    if not isinstance(header, dict) or not isinstance(claims, dict) or not header.keys() <= allowed_headers:
        raise InvalidToken
    if not isinstance(header.get("alg"), str):
        raise InvalidToken
    return header, claims


def _typ_matches(header: Mapping[str, Any], typ: str) -> bool:
    """RFC 7515 §4.1.9: a media type, compared case-insensitively, "application/" optional."""
    value = header.get("typ")
    if not isinstance(value, str):
        return False
    value = value.lower()
    return value.removeprefix("application/") == typ.lower()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def s256(value: str) -> str:
    """``BASE64URL(SHA256(ASCII(value)))``: the PKCE S256 challenge (RFC 7636 §4.2), also
    DPoP's ``ath`` (RFC 9449 §4.2). (An ID token's ``at_hash`` is its left half, OIDC Core §3.1.3.6.)"""
    return _b64(hashlib.sha256(value.encode("ascii")).digest())


# OIDC Core §3.1.3.6: the hash of the ID token's alg; Ed25519 uses SHA-512
# (OpenID Connect Core 1.0 errata set 2, §3.1.3.6).
_HALF_HASHES = {"RS256": "sha256", "PS256": "sha256", "ES256": "sha256", "ES384": "sha384", "EdDSA": "sha512"}


def half_hash(value: str, alg: str) -> str:
    """An ID token's ``at_hash`` / ``c_hash`` (OIDC Core §3.1.3.6, §3.3.2.11): base64url of
    the left half of the hash of ``value`` (ASCII) with the hash of ``alg``."""
    digest = hashlib.new(_HALF_HASHES[alg], value.encode("ascii")).digest()
    return _b64(digest[: len(digest) // 2])


# RFC 7638 §3.2: the required members of each key type, in lexicographic order.
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 JWK SHA-256 thumbprint, base64url: what DPoP binds a token to (RFC 9449 §6).

    Only public key types are accepted (RSA, EC, OKP); ValueError otherwise.
    """
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or not all(isinstance(jwk.get(name), str) for name in members):
        raise ValueError("not a public RSA, EC or OKP JWK")
    text = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(text.encode("utf-8")).digest())


def _foreign_key(jwk: Any, alg: str) -> _Key:
    """Import a public JWK someone else gave us, for ``alg`` only; InvalidToken if unfit.

    A private member means the party mishandles its keys (or tries to make us
    use a symmetric one); a key that says it is for another use or algorithm
    is not used for this one (RFC 7517 §4.2-4.4).
    """
    if not isinstance(jwk, dict) or _PRIVATE_MEMBERS & jwk.keys():
        raise InvalidToken
    if jwk.get("kty") != _KTY[alg]:
        raise InvalidToken
    if alg in _CRV and jwk.get("crv") != _CRV[alg]:
        raise InvalidToken
    if jwk.get("use", "sig") != "sig" or jwk.get("alg", alg) != alg:
        raise InvalidToken
    if "key_ops" in jwk and (not isinstance(jwk["key_ops"], list) or "verify" not in jwk["key_ops"]):
        raise InvalidToken
    cls: type[_Key] = {"OKP": OKPKey, "RSA": RSAKey, "EC": ECKey}[_KTY[alg]]  # type: ignore[assignment]
    key = cls.import_key({name: value for name, value in jwk.items() if name not in ("key_ops", "use", "alg")})
    if isinstance(key, RSAKey) and key.raw_value.key_size < _MIN_RSA_BITS:
        raise InvalidToken
    return key


def _check_times(claims: Mapping[str, Any], now: int, leeway: int, *, exp_required: bool = True) -> None:
    """exp (required), nbf and iat (if present) against ``now`` (RFC 7519 §4.1.4, §4.1.5, §4.1.6)."""
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if value is None:
            if name == "exp" and exp_required:
                raise InvalidToken
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidToken
    if "exp" in claims and claims["exp"] <= now - leeway:
        raise InvalidToken
    if claims.get("nbf", now) > now + leeway or claims.get("iat", now) > now + leeway:
        raise InvalidToken


def _check_algorithms(algorithms: Collection[str], allowed: Collection[str]) -> frozenset[str]:
    # Callers may narrow the allowlist, never widen it (ASVS V9.1.2).
    chosen = frozenset(algorithms)
    if not chosen or not chosen <= set(allowed):
        raise ValueError(f"algorithms must be a non-empty subset of {tuple(allowed)}")
    return chosen


def verify_jwt_with_jwks(
    token: str,
    jwks: Mapping[str, Any],
    *,
    algorithms: Collection[str],
    typ: str | None,
    now: int,
    leeway: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify a JWT signed by another party with a key of ``jwks``; (header, claims) or InvalidToken.

    For client assertions (RFC 7523 §3) and other providers' ID tokens (OIDC
    Core §3.1.3.7). The RFC 8725 header policy applies: ``alg`` from
    ``algorithms`` (a subset of :data:`FOREIGN_ALGORITHMS`), no header but
    ``alg``, ``kid``, ``typ`` and the ignored hints ``x5t`` and ``x5t#S256``; ``typ`` must match when given (None: not
    checked, as many providers send none). The key is the JWKS entry with the
    header's ``kid``; without a ``kid`` only a set with exactly one key fit for
    ``alg`` is usable. ``exp`` is required, ``nbf`` and ``iat`` checked when
    present. ``iss``, ``aud``, ``sub``, ``jti`` and ``nonce`` are the caller's.
    """
    allowed = _check_algorithms(algorithms, FOREIGN_ALGORITHMS)
    try:
        header, claims = _split(token, _FOREIGN_HEADERS)
        alg = header["alg"]
        if alg not in allowed or (typ is not None and not _typ_matches(header, typ)):
            raise InvalidToken
        keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
        if not isinstance(keys, list):
            raise InvalidToken
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken
        if kid is None:
            candidates = [k for k in keys if isinstance(k, dict) and k.get("kty") == _KTY[alg] and "kid" not in k]
            candidates = candidates or [k for k in keys if isinstance(k, dict) and k.get("kty") == _KTY[alg]]
        else:
            candidates = [k for k in keys if isinstance(k, dict) and k.get("kid") == kid]
        if len(candidates) != 1:
            raise InvalidToken
        key = _foreign_key(candidates[0], alg)
        jws.deserialize_compact(token, key, algorithms=[alg], registry=_Registry([alg]))
        _check_times(claims, now, leeway)
        return header, claims
    except (JoseError, ValueError, TypeError, KeyError):
        raise InvalidToken from None


def verify_dpop_proof(proof: str, *, algorithms: Collection[str]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Check a DPoP proof's form and signature (RFC 9449 §4.3 steps 2-7); (header, claims, jkt).

    The header must be exactly ``typ`` "dpop+jwt", an allowed asymmetric
    ``alg`` and a public ``jwk`` (no private member); the signature must verify
    with that key. ``jkt`` is its RFC 7638 thumbprint. Checking ``htm``,
    ``htu``, ``iat``, ``ath``, ``jti`` replay and ``nonce`` is the caller's
    (it knows the request and keeps the replay cache).
    """
    allowed = _check_algorithms(algorithms, FOREIGN_ALGORITHMS)
    try:
        header, claims = _split(proof, _DPOP_HEADERS)
        alg = header["alg"]
        if alg not in allowed or header.get("typ") != _DPOP_TYP or not isinstance(header.get("jwk"), dict):
            raise InvalidToken
        key = _foreign_key(header["jwk"], alg)
        jws.deserialize_compact(proof, key, algorithms=[alg], registry=_Registry([alg]))
        return header, claims, jwk_thumbprint(header["jwk"])
    except (JoseError, ValueError, TypeError, KeyError):
        raise InvalidToken from None


def _schedule(keys: list[tuple[str, int, str]], now: int, *, publish: int, retain: int) -> tuple[str, list[str]]:
    """Which key of one keyring signs at ``now``, and which keys are published.

    ``keys`` are (kid, created, status), oldest first. A key is published
    from its creation and signs only once it has been published ``publish``
    seconds, so every verifier refreshing its JWKS at least that often knows
    it before meeting a token it signed. A key stops signing when the next
    key reaches that age (its ``stop``), and stays published until the last
    token it signed has expired: ``retain`` (the longest token lifetime)
    after its stop. A revoked key neither signs nor is published, but its
    creation still stops its predecessor, so revoking never brings back a key
    that had stopped. Of the keys that have not stopped, the newest published
    long enough signs; if none is (a new install, or right after revoking the
    active key), the one published longest does: the active key itself when
    it is the only one left.
    """
    chain, published = [], []
    for index, (kid, created, status) in enumerate(keys):
        if status == "revoked":
            continue
        stop = keys[index + 1][1] + publish if status != "active" and index + 1 < len(keys) else None
        if stop is None or now < stop + retain:
            published.append(kid)
        if stop is None or now < stop:
            chain.append((kid, created))
    if not publish:
        # "Sign at once", whatever the clock says about the keys' creation
        # (a test's frozen clock may stand before it).
        return next(kid for kid, _, status in keys if status == "active"), published
    ready = [kid for kid, created in chain if created + publish <= now]
    return (ready[-1] if ready else chain[0][0]), published


class TokenSigner:
    """Issue and verify Bastion's JWTs, for one issuer, with one keyring per algorithm.

    ``keyrings`` maps an algorithm of :data:`ALLOWED_ALGORITHMS` to its keyring
    (``KEYRING_PURPOSES``). A rotated-in key is published in
    :meth:`public_jwks` at once and signs after ``publish_seconds``; a retired
    key keeps verifying, and stays published, until the last token it signed
    has expired (``max_ttl_seconds``, the longest lifetime :meth:`sign`
    accepts, plus the leeway); see ``_schedule``. A revoked key verifies
    nothing from the moment this process sees the keyring change. The clock
    is always passed in.
    """

    def __init__(
        self,
        keyrings: Mapping[str, Keyring],
        *,
        issuer: str,
        leeway_seconds: int = 0,
        key_check_seconds: float = 1.0,
        publish_seconds: int = 0,
        max_ttl_seconds: int = 3600,
    ) -> None:
        _check_algorithms(keyrings.keys(), ALLOWED_ALGORITHMS)
        for alg, keyring in keyrings.items():
            if keyring.purpose != KEYRING_PURPOSES[alg]:
                raise ValueError(f"{alg} needs the {KEYRING_PURPOSES[alg]!r} keyring")
        if leeway_seconds < 0 or publish_seconds < 0 or max_ttl_seconds <= 0:
            raise ValueError("leeway_seconds and publish_seconds must not be negative, max_ttl_seconds positive")
        self._publish = publish_seconds
        self._max_ttl = max_ttl_seconds
        # (kid, created, status) per algorithm, from the keyrings at ``_generations``.
        self._keys: dict[str, list[tuple[str, int, str]]] = {}
        self._keyrings = dict(keyrings)
        self._issuer = issuer
        self._leeway = leeway_seconds
        self._registry = _Registry(self._keyrings)
        # Derived from the keyrings as they were at generations ``_generations``:
        # parsed keys per (alg, kid), and tokens whose signature verified. All
        # of it is dropped when any keyring changes, so a removed key (a leaked
        # one) verifies nothing from then on, remembered tokens included.
        self._private_keys: dict[tuple[str, str], _Key] = {}
        self._public_keys: dict[tuple[str, str], _Key] = {}
        # token -> (alg, typ, claims) of a token whose signature and issuer verified.
        self._verified: dict[str, tuple[str, str, dict[str, Any]]] = {}
        self._generations = self._generations_now()
        # Another process (`bastion keys rotate|revoke`) changes the file, not
        # this object: look at the files at most this often (a stat each, off
        # the signature path).
        self._key_check_seconds = key_check_seconds
        self._next_key_check = 0.0

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def algorithms(self) -> tuple[str, ...]:
        return tuple(self._keyrings)

    def sign(
        self,
        claims: dict[str, Any],
        *,
        now: int,
        ttl_seconds: int,
        typ: str = "at+jwt",
        alg: str = "EdDSA",
        audience: str | list[str] | None = None,
    ) -> str:
        """Return a JWT of ``claims`` valid from ``now`` for ``ttl_seconds``, signed with ``alg``.

        ``claims`` must contain ``sub`` and must not contain the claims the
        signer sets itself: ``iss`` (the issuer), ``aud`` (``audience``, when
        given), ``iat``, ``nbf``, ``exp`` and a random ``jti``. The header is
        ``{alg, kid, typ}`` (RFC 8725 §3.11: "at+jwt" for access tokens, RFC
        9068 §2.1; "JWT" for ID tokens; "logout+jwt" for logout tokens).
        """
        if not 0 < ttl_seconds <= self._max_ttl:
            # Longer would outlive its key's publication after a rotation.
            raise ValueError(f"ttl_seconds must be positive and at most max_ttl_seconds ({self._max_ttl})")
        if _SIGNER_CLAIMS & claims.keys():
            raise ValueError(f"claims {sorted(_SIGNER_CLAIMS & claims.keys())} are set by the signer")
        if "sub" not in claims:
            raise ValueError("claims must contain 'sub'")
        if alg not in self._keyrings:
            raise ValueError(f"alg must be one of {self.algorithms}")
        self._keyrings[alg].refresh()  # one stat: never sign with a key revoked a moment ago
        self._current()
        payload = {**claims, "iss": self._issuer}
        if audience is not None:
            payload["aud"] = audience
        payload.update({"iat": now, "nbf": now, "exp": now + ttl_seconds, "jti": token_urlsafe(16)})
        kid, _ = self._schedule(alg, now)
        header = {"alg": alg, "kid": kid, "typ": typ}
        # Parsed once per kid: an RSA key takes milliseconds to load, its signature ~1.2 ms more.
        key = self._private_keys.get((alg, kid))
        if key is None:
            key = self._private_keys[alg, kid] = _keyring_key(alg, kid, self._keyrings[alg].secret(kid), private=True)
        return jwt.encode(header, payload, key, algorithms=[alg], registry=self._registry)

    def verify(
        self,
        token: str,
        *,
        now: int,
        typ: str = "at+jwt",
        audience: str | None = None,
        algorithms: Collection[str] | None = None,
    ) -> dict[str, Any]:
        """Return the claims of ``token`` if it is acceptable at ``now``, else raise InvalidToken.

        Acceptable: signed by a key of our keyrings with an algorithm of
        ``algorithms`` (default: every one we sign with), ``typ`` as given,
        ``iss`` ours, ``sub``, ``exp``, ``iat`` and ``jti`` present, within its
        lifetime, and ``aud`` containing ``audience``. With ``audience=None``
        the ``aud`` claim is not checked: the caller must then check it (e.g.
        an ``id_token_hint``, whose audience is the client it names).

        A token whose signature verified once is remembered (the exact
        string, so nothing unverified can match); its algorithm, type,
        audience and time claims are checked again on every call, the
        signature is not: the signature check was a third of an
        authenticated request. A remembered verification holds only while
        the keyrings are unchanged (``_current``): once a key is removed,
        here or by another process, its tokens are refused within
        ``key_check_seconds``.
        """
        allowed = self._keyrings.keys() if algorithms is None else algorithms
        self._current()
        try:
            remembered = self._verified.get(token)
            if remembered is None:
                remembered = self._verify(token, now)
                if len(self._verified) >= _REMEMBERED_TOKENS:
                    self._verified.clear()
                self._verified[token] = remembered
            alg, token_typ, claims = remembered
            if alg not in allowed or token_typ.removeprefix("application/") != typ.lower():
                raise InvalidToken
            if audience is not None:
                aud = claims.get("aud")
                if not (aud == audience or (isinstance(aud, list) and audience in aud)):
                    raise InvalidToken
            _check_times(claims, now, self._leeway)
            return dict(claims)
        except (JoseError, KeyringError, ValueError, TypeError, KeyError):
            raise InvalidToken from None

    def header_kid(self, token: str) -> str | None:
        """The ``kid`` of a token's header, unverified (for logs and key choice only), or None."""
        try:
            header, _ = _split(token, _ALLOWED_HEADERS)
        except (InvalidToken, ValueError, TypeError):
            return None
        kid = header.get("kid")
        return kid if isinstance(kid, str) else None

    def public_jwks(self, *, now: int | None = None) -> dict[str, Any]:
        """Return the JWK Set (RFC 7517 §5) of every published key of every algorithm, public parts only.

        Published: the keys that sign or will soon, and retired ones whose
        tokens may still be valid at ``now`` (default: the system clock);
        never a revoked one.
        """
        self._current()
        at = int(time.time()) if now is None else now
        return {
            "keys": [
                self._public_key(alg, kid).as_dict(private=False)
                for alg in self._keyrings
                for kid in self._schedule(alg, at)[1]
            ]
        }

    def public_jwk(self, alg: str, kid: str) -> dict[str, Any]:
        """The public JWK of key ``kid`` of ``alg``'s keyring, published now or not.

        For ``bastion keys export-public``, which hands verifiers off the box
        every key that is not revoked; KeyringError for a revoked or unknown kid.
        """
        if alg not in self._keyrings:
            raise KeyringError(f"no {alg} keyring")
        self._current()
        return self._public_key(alg, kid).as_dict(private=False)

    def signing_kid(self, alg: str, *, now: int) -> str:
        """The kid that signs ``alg`` tokens at ``now`` (publish-before-sign applied)."""
        self._current()
        return self._schedule(alg, now)[0]

    def _schedule(self, alg: str, now: int) -> tuple[str, list[str]]:
        keys = self._keys.get(alg)
        if keys is None:
            # created_at is kept to the second, rounded down: the key may be up
            # to a second younger, so count it from the next second.
            keys = [
                (info.kid, int(info.created_at.timestamp()) + 1, info.status) for info in self._keyrings[alg].kids()
            ]
            self._keys[alg] = keys
        return _schedule(keys, now, publish=self._publish, retain=self._max_ttl + self._leeway)

    def _generations_now(self) -> tuple[int, ...]:
        return tuple(keyring.generation for keyring in self._keyrings.values())

    def _current(self) -> None:
        """Forget what was derived from keys that may no longer be there."""
        now = time.monotonic()
        if now >= self._next_key_check:
            self._next_key_check = now + self._key_check_seconds
            for keyring in self._keyrings.values():
                keyring.refresh()
        generations = self._generations_now()
        if generations != self._generations:
            self._generations = generations
            self._private_keys.clear()
            self._public_keys.clear()
            self._verified.clear()
            self._keys.clear()

    def _verify(self, token: str, now: int) -> tuple[str, str, dict[str, Any]]:
        header, _ = _split(token, _ALLOWED_HEADERS)
        alg, kid, typ = header["alg"], header.get("kid"), header.get("typ")
        if alg not in self._keyrings or not isinstance(kid, str) or not isinstance(typ, str):
            raise InvalidToken
        key = self._public_key(alg, kid)
        if key.get("use") != "sig" or "verify" not in (key.get("key_ops") or ()):
            raise InvalidToken
        claims = jwt.decode(token, key, algorithms=[alg], registry=self._registry).claims
        jwt.JWTClaimsRegistry(
            now=now,
            leeway=self._leeway,
            iss={"essential": True, "value": self._issuer},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        ).validate(claims)
        return alg, typ.lower(), claims

    def _public_key(self, alg: str, kid: str) -> _Key:
        # Cached per kid (material for a kid never changes); only kids the
        # keyring of that algorithm knows are cached, so forged kids cannot
        # grow the cache, nor pick a key of another algorithm.
        key = self._public_keys.get((alg, kid))
        if key is None:
            key = _keyring_key(alg, kid, self._keyrings[alg].secret(kid), private=False)
            self._public_keys[alg, kid] = key
        return key
