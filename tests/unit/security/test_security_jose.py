"""Tests for bastion.security.jose: JWT signing and the attacks verification must refuse."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeyParameters, OKPKey

from bastion.security import (
    ALLOWED_ALGORITHMS,
    KEYRING_PURPOSES,
    InvalidToken,
    Keyring,
    MasterKey,
    TokenSigner,
    jose,
)
from bastion.security.jose import _okp_key, _Registry

NOW = 1_700_000_000
ISSUER = "https://bastion.example"
AUDIENCE = "bastion-api"

# RFC 8037 Appendix A.1 (private key), A.2 (public key) and A.4 (JWS).
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_JWS = (
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segment(value: dict[str, Any] | str) -> str:
    """Encode a JOSE segment; a str is taken as raw JSON text, to build odd JSON."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return b64(text.encode())


def forge(
    header: dict[str, Any] | str,
    claims: dict[str, Any] | str,
    key: Ed25519PrivateKey | None = None,
    signature: bytes = b"",
) -> str:
    """Build a compact JWS; signed with ``key`` if given, else carrying ``signature``."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    if key is not None:
        signature = key.sign(signing_input.encode())
    return f"{signing_input}.{b64(signature)}"


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{segment(header)}.{segment(claims)}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


@dataclass
class Server:
    """The real signer plus its active private key, so tests can sign arbitrary tokens
    exactly as the server would, and show a refusal comes from policy, not the signature."""

    signer: TokenSigner
    kid: str
    key: Ed25519PrivateKey
    attacker: Ed25519PrivateKey

    def header(self, drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
        header = {"alg": "EdDSA", "kid": self.kid, "typ": "at+jwt", **changes}
        return {k: v for k, v in header.items() if k not in drop}

    def claims(self, drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-1",
            "iat": NOW,
            "nbf": NOW,
            "exp": NOW + 300,
            "jti": "jti-1",
            **changes,
        }
        return {k: v for k, v in claims.items() if k not in drop}

    def sign(self, header: dict[str, Any] | str | None = None, claims: dict[str, Any] | str | None = None) -> str:
        return forge(self.header() if header is None else header, self.claims() if claims is None else claims, self.key)

    def public_bytes(self) -> bytes:
        return self.key.public_key().public_bytes_raw()


def rings(signing_keyring: Keyring) -> dict[str, Keyring]:
    """Every algorithm's keyring, next to the given "signing" one."""
    keys_dir = signing_keyring._path.parent
    master = MasterKey.generate()
    others = {
        alg: Keyring.load_or_create(keys_dir / "other-algs", purpose, master)
        for alg, purpose in KEYRING_PURPOSES.items()
        if alg != "EdDSA"
    }
    return {"EdDSA": signing_keyring, **others}


@pytest.fixture
def signer(signing_keyring: Keyring) -> TokenSigner:
    return TokenSigner(rings(signing_keyring), issuer=ISSUER)


@pytest.fixture
def server(signer: TokenSigner, signing_keyring: Keyring) -> Server:
    kid = signing_keyring.active_kid
    return Server(
        signer=signer,
        kid=kid,
        key=Ed25519PrivateKey.from_private_bytes(signing_keyring.secret(kid)),
        attacker=Ed25519PrivateKey.generate(),
    )


# --- published vectors -------------------------------------------------------


def test_v11_6_1_rfc8037_a2_public_key_from_private_key() -> None:
    """ASVS V11.6.1: our seed-to-JWK path derives RFC 8037 A.2's public key from A.1's seed."""
    public = _okp_key("rfc8037", unb64(RFC8037_D), private=False).as_dict(private=False)
    assert public["x"] == RFC8037_X
    assert public["crv"] == "Ed25519"
    assert "d" not in public


def test_v9_1_1_rfc8037_a4_signature_verifies_with_our_key_and_registry() -> None:
    """ASVS V9.1.1, V11.6.1: RFC 8037 A.4 verifies through our JWK builder and
    algorithm registry, our signing reproduces its signature byte for byte
    (Ed25519 is deterministic), and a changed signature fails."""
    registry = _Registry(ALLOWED_ALGORITHMS)
    public = _okp_key("rfc8037", unb64(RFC8037_D), private=False)
    assert jws.deserialize_compact(RFC8037_JWS, public, registry=registry).payload == b"Example of Ed25519 signing"

    private = _okp_key("rfc8037", unb64(RFC8037_D), private=True)
    signed = jws.serialize_compact({"alg": "EdDSA"}, b"Example of Ed25519 signing", private, registry=registry)
    assert signed == RFC8037_JWS

    head, payload, signature = RFC8037_JWS.split(".")
    altered = b64(bytes([unb64(signature)[0] ^ 1]) + unb64(signature)[1:])
    with pytest.raises(BadSignatureError):
        jws.deserialize_compact(f"{head}.{payload}.{altered}", public, registry=registry)


# --- issuing and accepting ---------------------------------------------------


def test_v9_1_1_signed_token_round_trips(signer: TokenSigner, signing_keyring: Keyring) -> None:
    """ASVS V9.1.1: the signer sets the registered claims and header itself."""
    token = signer.sign(
        {"sub": "user-1", "sid": "s-9", "roles": ["admin"]}, now=NOW, ttl_seconds=300, audience=AUDIENCE
    )
    header = json.loads(unb64(token.split(".")[0]))
    assert header == {"alg": "EdDSA", "kid": signing_keyring.active_kid, "typ": "at+jwt"}
    claims = signer.verify(token, now=NOW, audience=AUDIENCE)
    assert claims.pop("jti")
    assert claims == {
        "sub": "user-1",
        "sid": "s-9",
        "roles": ["admin"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 300,
    }


def test_v11_5_1_every_token_gets_a_random_jti(signer: TokenSigner) -> None:
    """ASVS V11.5.1: jti is random, so two tokens for the same claims differ."""
    jtis = {signer.verify(signer.sign({"sub": "u"}, now=NOW, ttl_seconds=60), now=NOW)["jti"] for _ in range(50)}
    assert len(jtis) == 50
    assert all(len(unb64(jti)) == 16 for jti in jtis)


def test_v9_2_1_token_is_valid_exactly_within_its_lifetime(signer: TokenSigner) -> None:
    """ASVS V9.2.1: valid from iat/nbf up to, not including, exp (RFC 7519 §4.1.4)."""
    token = signer.sign({"sub": "u"}, now=NOW, ttl_seconds=60)
    assert signer.verify(token, now=NOW)
    assert signer.verify(token, now=NOW + 59)
    for now in (NOW + 60, NOW + 61, NOW - 1):
        with pytest.raises(InvalidToken):
            signer.verify(token, now=now)


def test_v9_2_1_a_remembered_verification_still_expires_and_is_bounded(signer: TokenSigner) -> None:
    """ASVS V9.2.1: verified tokens are remembered, yet a remembered token is
    refused after exp, a copy with another signature is checked in full, and
    the memory cannot grow without bound."""
    token = signer.sign({"sub": "u"}, now=NOW, ttl_seconds=60)
    assert signer.verify(token, now=NOW)["sub"] == "u"
    assert token in signer._verified
    signer.verify(token, now=NOW)["sub"] = "admin"  # callers get a copy
    assert signer.verify(token, now=NOW + 1)["sub"] == "u"
    head, body, signature = token.split(".")
    with pytest.raises(InvalidToken):
        signer.verify(f"{head}.{body}.{signature[:-4]}AAAA", now=NOW)
    with pytest.raises(InvalidToken):
        signer.verify(token, now=NOW + 60)
    for _ in range(jose._REMEMBERED_TOKENS + 5):
        signer.verify(signer.sign({"sub": "u"}, now=NOW, ttl_seconds=60), now=NOW)
    assert len(signer._verified) <= jose._REMEMBERED_TOKENS


def test_v9_2_1_leeway_tolerates_bounded_clock_skew(signing_keyring: Keyring) -> None:
    """ASVS V9.2.1: with a 30 s leeway a token issued 20 s "in the future" passes, 31 s does not."""
    signer = TokenSigner(rings(signing_keyring), issuer=ISSUER, leeway_seconds=30)
    assert signer.verify(signer.sign({"sub": "u"}, now=NOW + 20, ttl_seconds=60), now=NOW)
    with pytest.raises(InvalidToken):
        signer.verify(signer.sign({"sub": "u"}, now=NOW + 31, ttl_seconds=60), now=NOW)


def test_v13_3_4_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key(
    signer: TokenSigner, signing_keyring: Keyring, keys_dir: Path, master: MasterKey
) -> None:
    """ASVS V13.3.4, V11.1.1: after rotation retired keys still verify, new tokens
    carry the new kid, and another instance loading the keyring agrees."""
    old_kid = signing_keyring.active_kid
    old_token = signer.sign({"sub": "u"}, now=NOW, ttl_seconds=60)
    new_kid = signing_keyring.rotate()
    new_token = signer.sign({"sub": "u"}, now=NOW, ttl_seconds=60)

    assert json.loads(unb64(old_token.split(".")[0]))["kid"] == old_kid
    assert json.loads(unb64(new_token.split(".")[0]))["kid"] == new_kid
    other_instance = TokenSigner({"EdDSA": Keyring.load(keys_dir, "signing", master)}, issuer=ISSUER)
    for verifier in (signer, other_instance):
        assert verifier.verify(old_token, now=NOW)["sub"] == "u"
        assert verifier.verify(new_token, now=NOW)["sub"] == "u"


def test_v9_1_1_a_removed_signing_key_verifies_nothing_even_what_was_remembered(
    signing_keyring: Keyring, keys_dir: Path, master: MasterKey
) -> None:
    """ASVS V9.1.1, V11.1.1: after a (leaked) signing key is removed by another
    process, as `bastion keys remove` does, a running signer refuses the tokens
    it signed, those it had verified and remembered included; the new key's
    tokens still pass."""
    signer = TokenSigner({"EdDSA": signing_keyring}, issuer=ISSUER, key_check_seconds=0)
    leaked = signing_keyring.active_kid
    token = signer.sign({"sub": "u"}, now=NOW, ttl_seconds=600)
    assert signer.verify(token, now=NOW)["sub"] == "u"
    assert token in signer._verified

    operator = Keyring.load(keys_dir, "signing", master)  # the CLI, another process
    operator.rotate()
    assert signer.verify(token, now=NOW + 1)["sub"] == "u"  # retired, not removed: still valid
    operator.remove(leaked)
    with pytest.raises(InvalidToken):
        signer.verify(token, now=NOW + 2)
    assert signer.verify(signer.sign({"sub": "u"}, now=NOW, ttl_seconds=600), now=NOW + 2)["sub"] == "u"


def test_v9_1_1_a_key_removed_in_this_process_is_forgotten_at_once(
    signer: TokenSigner, signing_keyring: Keyring
) -> None:
    """ASVS V9.1.1: removing a key through the signer's own keyring needs no file check."""
    leaked = signing_keyring.active_kid
    token = signer.sign({"sub": "u"}, now=NOW, ttl_seconds=600)
    assert signer.verify(token, now=NOW)["sub"] == "u"
    signing_keyring.rotate()
    signing_keyring.remove(leaked)
    with pytest.raises(InvalidToken):
        signer.verify(token, now=NOW)


def test_v9_1_3_public_jwks_lists_every_key_without_private_parts(
    signer: TokenSigner, signing_keyring: Keyring
) -> None:
    """ASVS V9.1.3: the published JWKS holds the public keys of all kids, verify-only."""
    signing_keyring.rotate()
    jwks = signer.public_jwks()
    eddsa = [key for key in jwks["keys"] if key["alg"] == "EdDSA"]
    assert [key["kid"] for key in eddsa] == [info.kid for info in signing_keyring.kids()]
    assert sorted(key["alg"] for key in jwks["keys"]) == ["ES256", "EdDSA", "EdDSA", "RS256"]
    for key in eddsa:
        assert "d" not in key
        assert key["kty"] == "OKP"
        assert key["crv"] == "Ed25519"
        assert key["use"] == "sig"
        assert key["key_ops"] == ["verify"]
        seed = signing_keyring.secret(key["kid"])
        assert unb64(key["x"]) == Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def test_v9_1_1_tokens_from_another_keyring_are_refused(signer: TokenSigner, keys_dir: Path) -> None:
    """ASVS V9.1.1: a token signed by another deployment's keyring does not verify here."""
    stranger = TokenSigner(
        {"EdDSA": Keyring.load_or_create(keys_dir / "other", "signing", MasterKey.generate())}, issuer=ISSUER
    )
    with pytest.raises(InvalidToken):
        signer.verify(stranger.sign({"sub": "u"}, now=NOW, ttl_seconds=60), now=NOW)


# --- refusals ------------------------------------------------------------------

Forgery = Callable[[Server], str]


def _with_header(token: str, header: dict[str, Any]) -> str:
    _, payload, signature = token.split(".")
    return f"{segment(header)}.{payload}.{signature}"


def _with_claims(token: str, claims: dict[str, Any]) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{segment(claims)}.{signature}"


def _with_signature(token: str, signature: str) -> str:
    header, payload, _ = token.split(".")
    return f"{header}.{payload}.{signature}"


def _altered_signature(s: Server) -> str:
    token = s.sign()
    signature = unb64(token.split(".")[2])
    return _with_signature(token, b64(bytes([signature[0] ^ 1]) + signature[1:]))


def _public_pem(s: Server) -> bytes:
    return s.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


FORGERIES: dict[str, Forgery] = {
    # V9.1.2: only allowlisted algorithms, never "none", whatever the spelling.
    "V9.1.2-alg-none": lambda s: forge(s.header(alg="none"), s.claims()),
    "V9.1.2-alg-None": lambda s: forge(s.header(alg="None"), s.claims()),
    "V9.1.2-alg-NONE": lambda s: forge(s.header(alg="NONE"), s.claims()),
    "V9.1.2-alg-nOnE": lambda s: forge(s.header(alg="nOnE"), s.claims()),
    "V9.1.2-alg-none-keeping-valid-signature": lambda s: _with_header(s.sign(), s.header(alg="none")),
    "V9.1.2-alg-missing": lambda s: s.sign(s.header(drop=("alg",))),
    "V9.1.2-alg-HS256-public-key-raw-as-secret": lambda s: hs256(s.header(alg="HS256"), s.claims(), s.public_bytes()),
    "V9.1.2-alg-HS256-public-key-pem-as-secret": lambda s: hs256(s.header(alg="HS256"), s.claims(), _public_pem(s)),
    "V9.1.2-alg-HS256-public-jwk-as-secret": lambda s: hs256(
        s.header(alg="HS256"), s.claims(), json.dumps(s.signer.public_jwks()["keys"][0]).encode()
    ),
    "V9.1.2-alg-ES256-r-s-zero": lambda s: forge(s.header(alg="ES256"), s.claims(), signature=bytes(64)),
    "V9.1.2-alg-RS256": lambda s: forge(s.header(alg="RS256"), s.claims(), signature=bytes(256)),
    # The Ed25519 maths checks out; only the allowlist refuses these names.
    "V9.1.2-alg-Ed25519-not-allowlisted": lambda s: s.sign(s.header(alg="Ed25519")),
    "V9.1.2-alg-lowercase-eddsa": lambda s: s.sign(s.header(alg="eddsa")),
    "V9.1.2-alg-as-list": lambda s: s.sign(s.header(alg=["EdDSA"])),
    # V9.1.3: keys only from our keyring; nothing in the token picks or supplies one.
    "V9.1.3-kid-unknown": lambda s: forge(s.header(kid="AAAAAAAAAAA"), s.claims(), s.attacker),
    "V9.1.3-kid-path-traversal": lambda s: forge(s.header(kid="../../etc/passwd"), s.claims(), s.attacker),
    "V9.1.3-kid-sql-injection": lambda s: forge(s.header(kid="x' OR '1'='1"), s.claims(), s.attacker),
    "V9.1.3-kid-missing": lambda s: s.sign(s.header(drop=("kid",))),
    "V9.1.3-kid-empty": lambda s: s.sign(s.header(kid="")),
    "V9.1.3-kid-not-a-string": lambda s: s.sign(s.header(kid=1)),
    "V9.1.3-kid-null": lambda s: s.sign(s.header(kid=None)),
    "V9.1.3-embedded-jwk-of-attacker": lambda s: forge(
        s.header(jwk=OKPKey.import_key(s.attacker.public_key()).as_dict()), s.claims(), s.attacker
    ),
    "V9.1.3-embedded-jwk-server-signed": lambda s: s.sign(s.header(jwk=s.signer.public_jwks()["keys"][0])),
    "V9.1.3-jku": lambda s: s.sign(s.header(jku="https://attacker.example/jwks.json")),
    "V9.1.3-x5u": lambda s: s.sign(s.header(x5u="https://attacker.example/cert.pem")),
    "V9.1.3-x5c": lambda s: s.sign(s.header(x5c=["MIIBszCCAVmgAwIBAgIU"])),
    "V9.1.3-x5t": lambda s: s.sign(s.header(x5t="dGh1bWJwcmludA")),
    "V9.1.3-x5t#S256": lambda s: s.sign({**s.header(), "x5t#S256": "dGh1bWJwcmludA"}),
    "V9.1.3-crit": lambda s: s.sign(s.header(crit=["exp"], exp=NOW + 300)),
    "V9.1.3-b64-false-unencoded-payload": lambda s: s.sign(s.header(b64=False, crit=["b64"])),
    "V9.1.3-unknown-header": lambda s: s.sign(s.header(foo="bar")),
    # V9.2.2: explicitly typed as a plain JWT from this issuer.
    # RFC 8725 §3.11: an ID token (typ JWT) is never an access token.
    "V9.2.2-typ-JWT-id-token": lambda s: s.sign(s.header(typ="JWT")),
    "V9.2.2-typ-logout": lambda s: s.sign(s.header(typ="logout+jwt")),
    "V9.2.2-typ-dpop": lambda s: s.sign(s.header(typ="dpop+jwt")),
    "V9.2.2-typ-not-a-string": lambda s: s.sign(s.header(typ=["at+jwt"])),
    "V9.2.2-typ-missing": lambda s: s.sign(s.header(drop=("typ",))),
    # V9.1.1: the signature covers header and payload exactly.
    "V9.1.1-signature-stripped": lambda s: s.sign().rsplit(".", 1)[0],
    "V9.1.1-signature-empty": lambda s: _with_signature(s.sign(), ""),
    "V9.1.1-signature-altered": _altered_signature,
    "V9.1.1-signature-truncated": lambda s: _with_signature(s.sign(), b64(unb64(s.sign().split(".")[2])[:-1])),
    "V9.1.1-signature-of-another-token": lambda s: _with_signature(
        s.sign(), s.sign(claims=s.claims(sub="user-2")).split(".")[2]
    ),
    "V9.1.1-signed-by-attacker-with-server-kid": lambda s: forge(s.header(), s.claims(), s.attacker),
    "V9.1.1-payload-tampered": lambda s: _with_claims(s.sign(), s.claims(sub="admin")),
    "V9.1.1-header-reencoded": lambda s: _with_header(s.sign(), {"typ": "at+jwt", "alg": "EdDSA", "kid": s.kid}),
    "V9.1.1-four-segments": lambda s: s.sign() + ".e30",
    "V9.1.1-jwe-shaped": lambda s: s.sign() + ".e30.e30",
    # V9.2.1: validity window.
    "V9.2.1-expired-at-exp": lambda s: s.sign(claims=s.claims(exp=NOW)),
    "V9.2.1-expired-long-ago": lambda s: s.sign(claims=s.claims(iat=NOW - 7200, nbf=NOW - 7200, exp=NOW - 3600)),
    "V9.2.1-nbf-in-future": lambda s: s.sign(claims=s.claims(nbf=NOW + 60)),
    "V9.2.1-iat-in-future": lambda s: s.sign(claims=s.claims(iat=NOW + 60)),
    "V9.2.1-exp-not-a-number": lambda s: s.sign(claims=s.claims(exp=str(NOW + 300))),
    "V9.2.1-exp-boolean": lambda s: s.sign(claims=s.claims(exp=True)),
    "V9.2.1-exp-nan": lambda s: s.sign(claims=json.dumps(s.claims(exp=float("nan")))),
    "V9.2.1-exp-missing": lambda s: s.sign(claims=s.claims(drop=("exp",))),
    "V9.2.1-iat-missing": lambda s: s.sign(claims=s.claims(drop=("iat",))),
    # V9.2.3 audience, V9.2.2 issuer and required claims.
    "V9.2.3-aud-other": lambda s: s.sign(claims=s.claims(aud="other-service")),
    "V9.2.3-aud-list-without-ours": lambda s: s.sign(claims=s.claims(aud=["other-service", "third"])),
    "V9.2.3-aud-missing": lambda s: s.sign(claims=s.claims(drop=("aud",))),
    "V9.2.2-iss-other": lambda s: s.sign(claims=s.claims(iss="https://attacker.example")),
    "V9.2.2-iss-missing": lambda s: s.sign(claims=s.claims(drop=("iss",))),
    "V9.2.2-sub-missing": lambda s: s.sign(claims=s.claims(drop=("sub",))),
    "V9.2.2-sub-empty": lambda s: s.sign(claims=s.claims(sub="")),
    "V9.2.2-sub-not-a-string": lambda s: s.sign(claims=s.claims(sub=1)),
    "V9.2.2-jti-missing": lambda s: s.sign(claims=s.claims(drop=("jti",))),
    # V11.2.5: garbage fails closed with the same error.
    "V11.2.5-empty-string": lambda s: "",
    "V11.2.5-dots-only": lambda s: "..",
    "V11.2.5-not-a-token": lambda s: "not a token",
    "V11.2.5-header-not-json": lambda s: f"{b64(b'not json')}.{segment(s.claims())}.AAAA",
    "V11.2.5-header-not-utf8": lambda s: b64(b"\xff\xfe") + f".{segment(s.claims())}.AAAA",
    "V11.2.5-header-json-array": lambda s: s.sign(header='["alg","EdDSA"]'),
    "V11.2.5-payload-json-array": lambda s: s.sign(claims='["sub","admin"]'),
    "V11.2.5-payload-not-json": lambda s: s.sign(claims="sub=admin"),
    "V11.2.5-header-padded": lambda s: s.sign().replace(".", "=.", 1),
    "V11.2.5-header-standard-base64-alphabet": lambda s: "+/" + s.sign(),
    "V11.2.5-header-duplicate-alg": lambda s: s.sign(
        header=f'{{"alg":"none","alg":"EdDSA","kid":"{s.kid}","typ":"at+jwt"}}'
    ),
    "V11.2.5-payload-duplicate-sub": lambda s: s.sign(claims=json.dumps(s.claims())[:-1] + ',"sub":"admin"}'),
    "V11.2.5-oversized": lambda s: s.sign(claims=s.claims(pad="A" * 200_000)),
}


@pytest.mark.parametrize("forgery", FORGERIES.values(), ids=FORGERIES.keys())
def test_v9_forged_or_invalid_tokens_are_refused(server: Server, forgery: Forgery) -> None:
    """ASVS V9.1.1, V9.1.2, V9.1.3, V9.2.1, V9.2.2, V9.2.3, V11.2.5: each case builds
    a real forged or invalid token (the case id names the requirement) and every
    one raises the same opaque InvalidToken."""
    assert server.signer.verify(server.sign(), now=NOW, audience=AUDIENCE)["sub"] == "user-1"  # the baseline passes
    with pytest.raises(InvalidToken) as caught:
        server.signer.verify(forgery(server), now=NOW, audience=AUDIENCE)
    assert str(caught.value) == ""


@pytest.mark.parametrize(
    "params",
    [{"use": "enc"}, {"use": "sig", "key_ops": ["sign"]}, {"use": "sig", "key_ops": []}, {}],
    ids=["use-enc", "key-ops-sign-only", "key-ops-empty", "no-use-no-key-ops"],
)
def test_v9_1_3_key_not_marked_for_verification_is_refused(server: Server, params: KeyParameters) -> None:
    """ASVS V9.1.3: a key is only used to verify if its JWK says use="sig" and
    key_ops contains "verify" (RFC 7517 §4.2, §4.3). Keys from the keyring are
    always built that way, so this planted key stands in for a misbuilt one."""
    token = server.sign()
    server.signer._public_keys["EdDSA", server.kid] = OKPKey.import_key(
        server.key.public_key(), {"kid": server.kid, **params}
    )
    with pytest.raises(InvalidToken):
        server.signer.verify(token, now=NOW)


# --- configuration and misuse ------------------------------------------------


@pytest.mark.parametrize("algorithms", [(), ("none",), ("HS256",), ("EdDSA", "PS256")])
def test_v9_1_2_allowlist_can_only_be_narrowed(signing_keyring: Keyring, algorithms: tuple[str, ...]) -> None:
    """ASVS V9.1.2: callers cannot add algorithms (or "none") to the allowlist."""
    keyrings = dict.fromkeys(algorithms, signing_keyring)
    with pytest.raises(ValueError, match="subset"):
        TokenSigner(keyrings, issuer=ISSUER)


@pytest.mark.parametrize("alg", ["EdDSA", "RS256", "ES256"])
def test_v11_1_2_signer_refuses_keys_of_another_purpose(
    encryption_keyring: Keyring, signing_keyring: Keyring, alg: str
) -> None:
    """ASVS V11.1.2: each algorithm signs only with its own keyring."""
    wrong = encryption_keyring if alg == "EdDSA" else signing_keyring
    with pytest.raises(ValueError, match="keyring"):
        TokenSigner({alg: wrong}, issuer=ISSUER)


@pytest.mark.parametrize(
    ("claims", "ttl", "message"),
    [
        ({"sub": "u", "exp": NOW + 10**9}, 60, "set by the signer"),
        ({"sub": "u", "aud": "other"}, 60, "set by the signer"),
        ({"sub": "u", "iss": "other"}, 60, "set by the signer"),
        ({"sub": "u", "jti": "fixed"}, 60, "set by the signer"),
        ({"role": "admin"}, 60, "must contain 'sub'"),
        ({"sub": "u"}, 0, "ttl_seconds"),
        ({"sub": "u"}, -1, "ttl_seconds"),
    ],
    ids=["sets-exp", "sets-aud", "sets-iss", "sets-jti", "no-sub", "zero-ttl", "negative-ttl"],
)
def test_sign_refuses_claims_the_signer_owns(
    signer: TokenSigner, claims: dict[str, Any], ttl: int, message: str
) -> None:
    """The signer alone sets lifetime, issuer, audience and jti; misuse is a ValueError."""
    with pytest.raises(ValueError, match=message):
        signer.sign(claims, now=NOW, ttl_seconds=ttl)


def test_negative_leeway_is_refused(signing_keyring: Keyring) -> None:
    with pytest.raises(ValueError, match="leeway"):
        TokenSigner({"EdDSA": signing_keyring}, issuer=ISSUER, leeway_seconds=-1)
