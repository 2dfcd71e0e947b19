"""Tests for the JOSE helpers others build on: tokens signed by other parties
(verify_jwt_with_jwks), DPoP proofs (verify_dpop_proof), RFC 7638 thumbprints
and S256; plus the algorithms Bastion signs with besides EdDSA."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from bastion.security import (
    ALLOWED_ALGORITHMS,
    KEYRING_PURPOSES,
    InvalidToken,
    Keyring,
    MasterKey,
    TokenSigner,
    half_hash,
    jwk_thumbprint,
    s256,
    verify_dpop_proof,
    verify_jwt_with_jwks,
)

NOW = 1_700_000_000
ISSUER = "https://bastion.example"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any] | str) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return b64(text.encode())


PrivateKey = Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def raw_sign(alg: str, key: PrivateKey, data: bytes) -> bytes:
    """A JWS signature (RFC 7518 §3) computed with pyca directly, not through joserfc."""
    if isinstance(key, Ed25519PrivateKey):
        return key.sign(data)
    if isinstance(key, rsa.RSAPrivateKey):
        pad: Any = padding.PKCS1v15() if alg == "RS256" else padding.PSS(padding.MGF1(hashes.SHA256()), 32)
        return key.sign(data, pad, hashes.SHA256())
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256() if alg == "ES256" else hashes.SHA384())))
    size = 32 if alg == "ES256" else 48
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def forge(header: dict[str, Any] | str, claims: dict[str, Any] | str, alg: str, key: PrivateKey | None) -> str:
    signing_input = f"{segment(header)}.{segment(claims)}"
    signature = raw_sign(alg, key, signing_input.encode()) if key is not None else b""
    return f"{signing_input}.{b64(signature)}"


def public_jwk(key: PrivateKey, **params: Any) -> dict[str, Any]:
    cls: Any = {Ed25519PrivateKey: OKPKey, rsa.RSAPrivateKey: RSAKey, ec.EllipticCurvePrivateKey: ECKey}
    for base, jwk_cls in cls.items():
        if isinstance(key, base):
            return {**jwk_cls.import_key(key.public_key()).as_dict(private=False), **params}
    raise AssertionError(key)


def private_jwk(key: PrivateKey) -> dict[str, Any]:
    for base, jwk_cls in (
        (Ed25519PrivateKey, OKPKey),
        (rsa.RSAPrivateKey, RSAKey),
        (ec.EllipticCurvePrivateKey, ECKey),
    ):
        if isinstance(key, base):
            return jwk_cls.import_key(key).as_dict(private=True)  # type: ignore[attr-defined]
    raise AssertionError(key)


KEYS: dict[str, PrivateKey] = {
    "EdDSA": Ed25519PrivateKey.generate(),
    "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": ec.generate_private_key(ec.SECP256R1()),
}
KEYS["PS256"] = KEYS["RS256"]
KEYS["ES384"] = ec.generate_private_key(ec.SECP384R1())
ATTACKER = {alg: type(key) for alg, key in KEYS.items()}
CLAIMS = {"iss": "client-1", "sub": "client-1", "aud": ISSUER, "iat": NOW, "exp": NOW + 60, "jti": "j-1"}


def client_jwks() -> dict[str, Any]:
    """A client's JWK Set: one key per algorithm, each with a kid."""
    keys = [public_jwk(key, kid=f"k-{alg}") for alg, key in KEYS.items() if alg != "PS256"]
    return {"keys": keys}


def assertion(alg: str, **header: Any) -> str:
    kid = "k-RS256" if alg == "PS256" else f"k-{alg}"
    return forge({"alg": alg, "kid": kid, "typ": "JWT", **header}, CLAIMS, alg, KEYS[alg])


# --- verify_jwt_with_jwks: tokens signed by others -----------------------------


@pytest.mark.parametrize("alg", ["EdDSA", "RS256", "PS256", "ES256", "ES384"])
def test_v9_1_1_a_token_signed_by_a_key_of_the_set_verifies(alg: str) -> None:
    """ASVS V9.1.1: a client assertion (RFC 7523) or provider ID token signed with a
    key of the JWKS, with the kid it names, verifies; header and claims come back."""
    header, claims = verify_jwt_with_jwks(assertion(alg), client_jwks(), algorithms=[alg], typ="JWT", now=NOW)
    assert header["alg"] == alg
    assert claims == CLAIMS


def test_v9_1_1_without_kid_only_a_set_with_one_fitting_key_is_usable() -> None:
    """ASVS V9.1.3: no kid picks the single key of the right type, never guesses among several."""
    token = forge({"alg": "ES256"}, CLAIMS, "ES256", KEYS["ES256"])
    single = {"keys": [public_jwk(KEYS["ES256"]), public_jwk(KEYS["RS256"])]}
    assert verify_jwt_with_jwks(token, single, algorithms=["ES256"], typ=None, now=NOW)[1] == CLAIMS
    two = {"keys": [public_jwk(KEYS["ES256"]), public_jwk(ec.generate_private_key(ec.SECP256R1()))]}
    with pytest.raises(InvalidToken):
        verify_jwt_with_jwks(token, two, algorithms=["ES256"], typ=None, now=NOW)


def _hs256_with(secret: bytes) -> str:
    signing_input = f"{segment({'alg': 'HS256', 'kid': 'k-RS256'})}.{segment(CLAIMS)}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def _rsa_pem() -> bytes:
    return (
        KEYS["RS256"]
        .public_key()
        .public_bytes(  # type: ignore[union-attr]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _with_private_members() -> tuple[str, dict[str, Any]]:
    return assertion("ES256"), {"keys": [{**private_jwk(KEYS["ES256"]), "kid": "k-ES256"}]}


def _weak_rsa() -> tuple[str, dict[str, Any]]:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key under test
    return forge({"alg": "RS256", "kid": "w"}, CLAIMS, "RS256", weak), {"keys": [public_jwk(weak, kid="w")]}


def _oct_key() -> tuple[str, dict[str, Any]]:
    secret = b"s" * 32
    jwk = {"kty": "oct", "kid": "k-RS256", "k": b64(secret)}
    return _hs256_with(secret), {"keys": [jwk]}


def _set(**changes: Any) -> dict[str, Any]:
    jwks = client_jwks()
    jwks["keys"] = [{**key, **changes} if key["kid"] == "k-ES256" else key for key in jwks["keys"]]
    return jwks


FOREIGN_FORGERIES: dict[str, Any] = {
    "alg-none": lambda: (forge({"alg": "none", "kid": "k-ES256"}, CLAIMS, "none", None), client_jwks()),
    "alg-none-keeping-signature": lambda: (
        segment({"alg": "none", "kid": "k-ES256"}) + "." + assertion("ES256").split(".", 1)[1],
        client_jwks(),
    ),
    "HS256-public-key-pem-as-secret": lambda: (_hs256_with(_rsa_pem()), client_jwks()),
    "HS256-public-jwk-n-as-secret": lambda: (
        _hs256_with(base64.urlsafe_b64decode(client_jwks()["keys"][1]["n"] + "==")),
        client_jwks(),
    ),
    "HS256-oct-key-in-set": _oct_key,
    "kid-not-in-set": lambda: (assertion("ES256", kid="k-unknown"), client_jwks()),
    "kid-of-another-alg": lambda: (
        forge({"alg": "ES256", "kid": "k-RS256"}, CLAIMS, "ES256", KEYS["ES256"]),
        client_jwks(),
    ),
    "kid-not-a-string": lambda: (assertion("ES256", kid=7), client_jwks()),
    "signed-by-attacker-with-set-kid": lambda: (
        forge({"alg": "ES256", "kid": "k-ES256"}, CLAIMS, "ES256", ec.generate_private_key(ec.SECP256R1())),
        client_jwks(),
    ),
    "payload-tampered": lambda: (
        ".".join(
            [assertion("ES256").split(".")[0], segment({**CLAIMS, "sub": "admin"}), assertion("ES256").split(".")[2]]
        ),
        client_jwks(),
    ),
    "private-members-in-set": _with_private_members,
    "key-use-enc": lambda: (assertion("ES256"), _set(use="enc")),
    "key-alg-other": lambda: (assertion("ES256"), _set(alg="ES384")),
    "key-ops-sign-only": lambda: (assertion("ES256"), _set(key_ops=["sign"])),
    "key-crv-other": lambda: (assertion("ES256"), _set(crv="P-384")),
    "rsa-1024": _weak_rsa,
    "embedded-jwk": lambda: (assertion("ES256", jwk=public_jwk(KEYS["ES256"])), client_jwks()),
    "jku": lambda: (assertion("ES256", jku="https://attacker.example/jwks"), client_jwks()),
    "x5c": lambda: (assertion("ES256", x5c=["MIIB"]), client_jwks()),
    "crit": lambda: (assertion("ES256", crit=["exp"]), client_jwks()),
    "typ-other": lambda: (assertion("ES256", typ="at+jwt"), client_jwks()),
    "typ-missing": lambda: (forge({"alg": "ES256", "kid": "k-ES256"}, CLAIMS, "ES256", KEYS["ES256"]), client_jwks()),
    "duplicate-alg": lambda: (
        forge('{"alg":"none","alg":"ES256","kid":"k-ES256","typ":"JWT"}', CLAIMS, "ES256", KEYS["ES256"]),
        client_jwks(),
    ),
    "duplicate-kid": lambda: (
        forge('{"alg":"ES256","kid":"k-unknown","kid":"k-ES256","typ":"JWT"}', CLAIMS, "ES256", KEYS["ES256"]),
        client_jwks(),
    ),
    "duplicate-claim": lambda: (
        forge(
            {"alg": "ES256", "kid": "k-ES256", "typ": "JWT"},
            json.dumps(CLAIMS)[:-1] + ',"sub":"admin"}',
            "ES256",
            KEYS["ES256"],
        ),
        client_jwks(),
    ),
    "oversized-header-member": lambda: (assertion("ES256", kid="k" * 5000), client_jwks()),
    "oversized-token": lambda: (
        forge(
            {"alg": "ES256", "kid": "k-ES256", "typ": "JWT"}, {**CLAIMS, "pad": "A" * 20_000}, "ES256", KEYS["ES256"]
        ),
        client_jwks(),
    ),
    "expired": lambda: (
        forge({"alg": "ES256", "kid": "k-ES256", "typ": "JWT"}, {**CLAIMS, "exp": NOW}, "ES256", KEYS["ES256"]),
        client_jwks(),
    ),
    "exp-missing": lambda: (
        forge(
            {"alg": "ES256", "kid": "k-ES256", "typ": "JWT"},
            {k: v for k, v in CLAIMS.items() if k != "exp"},
            "ES256",
            KEYS["ES256"],
        ),
        client_jwks(),
    ),
    "exp-a-string": lambda: (
        forge(
            {"alg": "ES256", "kid": "k-ES256", "typ": "JWT"}, {**CLAIMS, "exp": str(NOW + 60)}, "ES256", KEYS["ES256"]
        ),
        client_jwks(),
    ),
    "nbf-future": lambda: (
        forge({"alg": "ES256", "kid": "k-ES256", "typ": "JWT"}, {**CLAIMS, "nbf": NOW + 30}, "ES256", KEYS["ES256"]),
        client_jwks(),
    ),
    "iat-future": lambda: (
        forge({"alg": "ES256", "kid": "k-ES256", "typ": "JWT"}, {**CLAIMS, "iat": NOW + 30}, "ES256", KEYS["ES256"]),
        client_jwks(),
    ),
    "jwks-not-a-set": lambda: (assertion("ES256"), {"keys": "nope"}),
    "empty-set": lambda: (assertion("ES256"), {"keys": []}),
}


@pytest.mark.parametrize("forgery", FOREIGN_FORGERIES.values(), ids=FOREIGN_FORGERIES.keys())
def test_v9_1_2_v9_1_3_forged_foreign_tokens_are_refused(forgery: Any) -> None:
    """ASVS V9.1.1, V9.1.2, V9.1.3, V9.2.1: each forged or unfit token (or set) raises the
    same opaque InvalidToken, while the honest assertion passes with the same policy."""
    algorithms = ["EdDSA", "RS256", "ES256"]
    assert verify_jwt_with_jwks(assertion("ES256"), client_jwks(), algorithms=algorithms, typ="JWT", now=NOW)
    token, jwks = forgery()
    with pytest.raises(InvalidToken) as caught:
        verify_jwt_with_jwks(token, jwks, algorithms=algorithms, typ="JWT", now=NOW)
    assert str(caught.value) == ""


def test_a_certificate_thumbprint_hint_is_tolerated_and_ignored() -> None:
    """Entra ID puts x5t beside kid: accepted, but the key is still the kid's (a
    thumbprint of another key changes nothing)."""
    token = assertion("RS256", x5t="bm90LXRoaXMta2V5")
    assert verify_jwt_with_jwks(token, client_jwks(), algorithms=["RS256"], typ="JWT", now=NOW)
    forged = forge(
        {"alg": "RS256", "kid": "k-RS256", "typ": "JWT", "x5t": "bm90LXRoaXMta2V5"},
        CLAIMS,
        "RS256",
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )
    with pytest.raises(InvalidToken):
        verify_jwt_with_jwks(forged, client_jwks(), algorithms=["RS256"], typ="JWT", now=NOW)


def test_v9_2_1_leeway_is_bounded() -> None:
    """ASVS V9.2.1: a 30 s leeway admits a token expired 20 s ago, not 31 s ago."""
    header = {"alg": "ES256", "kid": "k-ES256", "typ": "JWT"}
    token = forge(header, {**CLAIMS, "exp": NOW - 20}, "ES256", KEYS["ES256"])
    assert verify_jwt_with_jwks(token, client_jwks(), algorithms=["ES256"], typ="JWT", now=NOW, leeway=30)
    token = forge(header, {**CLAIMS, "exp": NOW - 31}, "ES256", KEYS["ES256"])
    with pytest.raises(InvalidToken):
        verify_jwt_with_jwks(token, client_jwks(), algorithms=["ES256"], typ="JWT", now=NOW, leeway=30)


def test_v9_1_2_an_algorithm_outside_the_callers_list_is_refused() -> None:
    """ASVS V9.1.2: the caller's allowlist (the client's registered alg) is the only one."""
    with pytest.raises(InvalidToken):
        verify_jwt_with_jwks(assertion("RS256"), client_jwks(), algorithms=["ES256"], typ="JWT", now=NOW)


@pytest.mark.parametrize("algorithms", [[], ["none"], ["HS256"], ["ES256", "HS512"]])
def test_v9_1_2_the_allowlist_cannot_name_none_or_symmetric_algorithms(algorithms: list[str]) -> None:
    """ASVS V9.1.2: "none" and HMAC algorithms cannot even be asked for."""
    with pytest.raises(ValueError, match="subset"):
        verify_jwt_with_jwks(assertion("ES256"), client_jwks(), algorithms=algorithms, typ="JWT", now=NOW)
    with pytest.raises(ValueError, match="subset"):
        verify_dpop_proof(assertion("ES256"), algorithms=algorithms)


# --- verify_dpop_proof -----------------------------------------------------------

PROOF_CLAIMS = {"jti": "p-1", "htm": "POST", "htu": "https://bastion.example/oauth2/token", "iat": NOW}


def proof(alg: str = "ES256", key: PrivateKey | None = None, **header: Any) -> str:
    key = key or KEYS[alg]
    return forge({"typ": "dpop+jwt", "alg": alg, "jwk": public_jwk(key), **header}, PROOF_CLAIMS, alg, key)


@pytest.mark.parametrize("alg", ["EdDSA", "RS256", "PS256", "ES256"])
def test_v9_1_1_a_dpop_proof_verifies_and_gives_its_key_thumbprint(alg: str) -> None:
    """ASVS V9.1.1: RFC 9449 §4.3: the proof verifies with its own header key; the
    returned jkt is that key's RFC 7638 thumbprint (what tokens bind to, §6.1)."""
    header, claims, jkt = verify_dpop_proof(proof(alg), algorithms=["EdDSA", "RS256", "PS256", "ES256"])
    assert claims == PROOF_CLAIMS
    assert header["typ"] == "dpop+jwt"
    assert jkt == jwk_thumbprint(public_jwk(KEYS[alg]))


def _dpop_private_jwk(alg: str) -> str:
    key = KEYS[alg]
    return forge({"typ": "dpop+jwt", "alg": alg, "jwk": private_jwk(key)}, PROOF_CLAIMS, alg, key)


def _dpop_oct() -> str:
    secret = b"k" * 32
    signing_input = f"{segment({'typ': 'dpop+jwt', 'alg': 'HS256', 'jwk': {'kty': 'oct', 'k': b64(secret)}})}"
    signing_input += f".{segment(PROOF_CLAIMS)}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


DPOP_FORGERIES: dict[str, Any] = {
    "private-ec-jwk-in-header": lambda: _dpop_private_jwk("ES256"),
    "private-rsa-jwk-in-header": lambda: _dpop_private_jwk("RS256"),
    "private-okp-jwk-in-header": lambda: _dpop_private_jwk("EdDSA"),
    "symmetric-jwk-hs256": _dpop_oct,
    "alg-none": lambda: forge(
        {"typ": "dpop+jwt", "alg": "none", "jwk": public_jwk(KEYS["ES256"])}, PROOF_CLAIMS, "none", None
    ),
    "typ-jwt": lambda: proof(typ="JWT"),
    "typ-missing": lambda: forge(
        {"alg": "ES256", "jwk": public_jwk(KEYS["ES256"])}, PROOF_CLAIMS, "ES256", KEYS["ES256"]
    ),
    "jwk-missing": lambda: forge({"typ": "dpop+jwt", "alg": "ES256"}, PROOF_CLAIMS, "ES256", KEYS["ES256"]),
    "jwk-not-an-object": lambda: proof(jwk="eyJ"),
    "jwk-other-kty-than-alg": lambda: forge(
        {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(KEYS["RS256"])}, PROOF_CLAIMS, "ES256", KEYS["ES256"]
    ),
    "signed-by-another-key": lambda: proof(jwk=public_jwk(ec.generate_private_key(ec.SECP256R1()))),
    "kid-header": lambda: proof(kid="k-1"),
    "jku-header": lambda: proof(jku="https://attacker.example/jwks"),
    "x5c-header": lambda: proof(x5c=["MIIB"]),
    "duplicate-jwk": lambda: forge(
        '{"typ":"dpop+jwt","alg":"ES256","jwk":'
        + json.dumps(public_jwk(ec.generate_private_key(ec.SECP256R1())))
        + ',"jwk":'
        + json.dumps(public_jwk(KEYS["ES256"]))
        + "}",
        PROOF_CLAIMS,
        "ES256",
        KEYS["ES256"],
    ),
    "duplicate-member-inside-jwk": lambda: forge(
        '{"typ":"dpop+jwt","alg":"ES256","jwk":' + json.dumps(public_jwk(KEYS["ES256"]))[:-1] + ',"x":"AAAA"}}',
        PROOF_CLAIMS,
        "ES256",
        KEYS["ES256"],
    ),
    "oversized-jwk-member": lambda: proof(jwk={**public_jwk(KEYS["ES256"]), "pad": "A" * 4000}),
    "alg-not-allowed-es384": lambda: proof("ES384"),
    "signature-stripped": lambda: proof().rsplit(".", 1)[0] + ".",
}


@pytest.mark.parametrize("forgery", DPOP_FORGERIES.values(), ids=DPOP_FORGERIES.keys())
def test_v9_1_3_forged_dpop_proofs_are_refused(forgery: Any) -> None:
    """ASVS V9.1.1, V9.1.2, V9.1.3: RFC 9449 §4.3 steps 2-7 fail closed: a private or
    symmetric key in the header, a wrong typ, extra key-selecting headers, duplicates."""
    algorithms = ["EdDSA", "RS256", "ES256"]
    assert verify_dpop_proof(proof(), algorithms=algorithms)
    with pytest.raises(InvalidToken) as caught:
        verify_dpop_proof(forgery(), algorithms=algorithms)
    assert str(caught.value) == ""


# --- thumbprints and S256 ----------------------------------------------------------


def test_v11_6_1_rfc7638_section_3_1_thumbprint() -> None:
    """ASVS V11.6.1: RFC 7638 §3.1's example key has thumbprint NzbLsXh8…; extra members do not count."""
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3o"
            "knjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHz"
            "u6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8"
            "awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert jwk_thumbprint({**jwk, "use": "sig", "kid": "other"}) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "oct", "k": "c2VjcmV0"},
        {"kty": "EC", "crv": "P-256", "x": "AA"},
        {"kty": "RSA", "n": 1, "e": "AQAB"},
        {},
    ],
    ids=["oct", "ec-without-y", "n-not-a-string", "empty"],
)
def test_thumbprint_refuses_symmetric_or_incomplete_keys(jwk: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="public"):
        jwk_thumbprint(jwk)


def test_v11_6_1_s256_is_rfc7636_appendix_b() -> None:
    """ASVS V11.6.1: RFC 7636 Appendix B's verifier gives its code_challenge."""
    assert s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    with pytest.raises(UnicodeEncodeError):
        s256("é")  # ASCII only (RFC 7636 §4.2)


@pytest.mark.parametrize(
    ("alg", "name", "length"),
    [
        ("RS256", "sha256", 16),
        ("ES256", "sha256", 16),
        ("PS256", "sha256", 16),
        ("ES384", "sha384", 24),
        ("EdDSA", "sha512", 32),
    ],
)
def test_half_hash_is_the_left_half_of_the_algs_hash(alg: str, name: str, length: int) -> None:
    """OIDC Core §3.1.3.6: at_hash is the left half of the hash the ID token's alg uses
    (SHA-512 for Ed25519, errata set 2)."""
    token = "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
    assert half_hash(token, alg) == b64(hashlib.new(name, token.encode()).digest()[:length])
    assert half_hash(token, alg) != half_hash(token + "x", alg)
    with pytest.raises(KeyError):
        half_hash(token, "HS256")


# --- TokenSigner over every algorithm ------------------------------------------------


@pytest.fixture
def signer(tmp_path: Path) -> TokenSigner:
    master = MasterKey.generate()
    rings = {alg: Keyring.load_or_create(tmp_path / "keys", p, master) for alg, p in KEYRING_PURPOSES.items()}
    return TokenSigner(rings, issuer=ISSUER)


@pytest.mark.parametrize("alg", ALLOWED_ALGORITHMS)
def test_v9_1_1_each_algorithm_signs_and_an_independent_verifier_accepts_it(signer: TokenSigner, alg: str) -> None:
    """ASVS V9.1.1: EdDSA, RS256 and ES256 tokens verify here and, from the published
    JWKS alone, in joserfc used directly (what a relying party does)."""
    token = signer.sign({"sub": "u"}, now=NOW, ttl_seconds=60, alg=alg, typ="JWT", audience="client-1")
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == alg
    assert header["typ"] == "JWT"
    assert signer.verify(token, now=NOW, typ="JWT", audience="client-1")["aud"] == "client-1"
    published = KeySet.import_key_set(signer.public_jwks())  # type: ignore[arg-type]
    assert jwt.decode(token, published, algorithms=[alg]).claims["iss"] == ISSUER
    _, claims = verify_jwt_with_jwks(token, signer.public_jwks(), algorithms=[alg], typ="JWT", now=NOW)
    assert claims["sub"] == "u"


@pytest.mark.parametrize("alg", ALLOWED_ALGORITHMS)
def test_v9_2_2_an_id_token_never_verifies_as_an_access_token(signer: TokenSigner, alg: str) -> None:
    """ASVS V9.2.2: RFC 8725 §3.11: the same key, issuer, subject and audience, but
    typ "JWT" (an ID token): refused where "at+jwt" is expected, and the reverse."""
    id_token = signer.sign({"sub": "u"}, now=NOW, ttl_seconds=60, alg=alg, typ="JWT", audience="bastion-api")
    access = signer.sign({"sub": "u"}, now=NOW, ttl_seconds=60, alg=alg, audience="bastion-api")
    assert signer.verify(id_token, now=NOW, typ="JWT", audience="bastion-api")  # remembered now, too
    assert signer.verify(access, now=NOW, audience="bastion-api")
    with pytest.raises(InvalidToken):
        signer.verify(id_token, now=NOW, audience="bastion-api")
    with pytest.raises(InvalidToken):
        signer.verify(access, now=NOW, typ="JWT", audience="bastion-api")


def test_v9_2_2_typ_compares_as_a_media_type(signer: TokenSigner) -> None:
    """RFC 9068 §4: "application/at+jwt" is "at+jwt"; case does not matter (RFC 7515 §4.1.9)."""
    for typ in ("application/at+jwt", "AT+JWT"):
        token = signer.sign({"sub": "u"}, now=NOW, ttl_seconds=60, typ=typ)
        assert signer.verify(token, now=NOW)["sub"] == "u"


def test_v9_2_3_audience_and_algorithms_are_checked_on_every_call(signer: TokenSigner) -> None:
    """ASVS V9.2.3, V9.1.2: a remembered token is still refused for another audience or
    an algorithm the caller does not accept (the memory skips only the signature)."""
    token = signer.sign({"sub": "u"}, now=NOW, ttl_seconds=60, alg="RS256", audience=["a", "b"])
    assert signer.verify(token, now=NOW, audience="b")
    for kwargs in ({"audience": "c"}, {"audience": "b", "algorithms": ["EdDSA", "ES256"]}):
        with pytest.raises(InvalidToken):
            signer.verify(token, now=NOW, **kwargs)  # type: ignore[arg-type]


def test_v9_1_3_a_kid_of_one_algorithm_does_not_select_a_key_for_another(signer: TokenSigner) -> None:
    """ASVS V9.1.3: the kid is looked up in the keyring of the header's alg only."""
    token = signer.sign({"sub": "u"}, now=NOW, ttl_seconds=60, alg="ES256")
    head, body, signature = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    for alg in ("RS256", "EdDSA"):
        with pytest.raises(InvalidToken):
            signer.verify(f"{segment({**header, 'alg': alg})}.{body}.{signature}", now=NOW)


def test_sign_refuses_an_algorithm_it_has_no_keyring_for(tmp_path: Path) -> None:
    ring = Keyring.load_or_create(tmp_path, "signing", MasterKey.generate())
    only_eddsa = TokenSigner({"EdDSA": ring}, issuer=ISSUER)
    for alg in ("RS256", "HS256", "none"):
        with pytest.raises(ValueError, match="alg"):
            only_eddsa.sign({"sub": "u"}, now=NOW, ttl_seconds=60, alg=alg)


def test_public_jwks_has_no_private_member(signer: TokenSigner) -> None:
    """ASVS V9.1.3: the published set holds public keys only, one per algorithm's key."""
    jwks = signer.public_jwks()
    assert sorted(key["kty"] for key in jwks["keys"]) == ["EC", "OKP", "RSA"]
    for key in jwks["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & key.keys()
        assert key["use"] == "sig"
