"""Forged and tampered access tokens are refused by the API (V9.1.1, V9.1.2,
V9.1.3, V9.2.1, V9.2.3), each for real against GET /api/v1/me."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable

import pytest

from bastion.security import TokenSigner
from harness import Harness

ALICE = "alice@example.com"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def parts(token: str) -> tuple[dict[str, object], dict[str, object], str]:
    header, payload, signature = token.split(".")
    return json.loads(unb64(header)), json.loads(unb64(payload)), signature


def assemble(header: dict[str, object], payload: dict[str, object], signature: str) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{signature}"


def alg_none(token: str, harness: Harness, alg: str = "none") -> str:
    header, payload, _ = parts(token)
    return assemble({**header, "alg": alg}, payload, "")


def hs256_with_public_key(token: str, harness: Harness) -> str:
    header, payload, _ = parts(token)
    jwk = harness.app.state.sessions.signer.public_jwks()["keys"][0]
    secret = unb64(jwk["x"])  # the public key, used as an HMAC secret
    forged_header = {**header, "alg": "HS256"}
    signing_input = f"{b64(json.dumps(forged_header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def with_header(**changes: object) -> Callable[[str, Harness], str]:
    def forge(token: str, harness: Harness) -> str:
        header, payload, signature = parts(token)
        return assemble({**header, **changes}, payload, signature)

    return forge


def with_claims(**changes: object) -> Callable[[str, Harness], str]:
    def forge(token: str, harness: Harness) -> str:
        header, payload, signature = parts(token)
        return assemble(header, {**payload, **changes}, signature)

    return forge


def strip_signature(token: str, harness: Harness) -> str:
    return token.rsplit(".", 1)[0]


def empty_signature(token: str, harness: Harness) -> str:
    return token.rsplit(".", 1)[0] + "."


def es256_zero(token: str, harness: Harness) -> str:
    header, payload, _ = parts(token)
    return assemble({**header, "alg": "ES256"}, payload, b64(bytes(64)))  # r = s = 0


def resign(
    token: str,
    harness: Harness,
    *,
    signer: TokenSigner | None = None,
    shift: int = 0,
    ttl: int = 60,
    typ: str = "at+jwt",
    audience: str | None = "bastion-api",
    **changes: object,
) -> str:
    """The token's claims signed again by a real signer (ours unless given), with changes."""
    _, payload, _ = parts(token)
    claims = {name: payload[name] for name in ("sub", "sid", "client_id")} | changes
    return (signer or harness.app.state.sessions.signer).sign(
        claims, now=int(harness.clock.now().timestamp()) + shift, ttl_seconds=ttl, typ=typ, audience=audience
    )


def other_issuer(token: str, harness: Harness) -> str:
    evil = TokenSigner(harness.app.state.keys.signing_keyrings(), issuer="https://evil.example")
    return resign(token, harness, signer=evil)


def not_yet_valid(token: str, harness: Harness) -> str:
    return resign(token, harness, shift=3600, ttl=600)


def expired(token: str, harness: Harness) -> str:
    return resign(token, harness, shift=-700, ttl=600)


def embedded_jwk(token: str, harness: Harness) -> str:
    jwk = harness.app.state.sessions.signer.public_jwks()["keys"][0]
    return with_header(jwk=jwk)(token, harness)


FORGERIES: dict[str, Callable[[str, Harness], str]] = {
    "alg none": alg_none,
    "alg None": lambda t, h: alg_none(t, h, "None"),
    "alg NONE": lambda t, h: alg_none(t, h, "NONE"),
    "HS256 with the public key": hs256_with_public_key,
    "unknown kid": with_header(kid="no-such-key"),
    "path traversal kid": with_header(kid="../../../../dev/null"),
    "sql injection kid": with_header(kid="x' OR '1'='1"),
    "embedded jwk": embedded_jwk,
    "jku header": with_header(jku="https://attacker.example/jwks.json"),
    "x5u header": with_header(x5u="https://attacker.example/cert.pem"),
    "stripped signature": strip_signature,
    "empty signature": empty_signature,
    "tampered subject": with_claims(sub="00000000-0000-0000-0000-000000000000"),
    "tampered expiry": with_claims(exp=4102444800),
    "ES256 r=s=0": es256_zero,
    "wrong issuer": other_issuer,
    "old issuer": lambda t, h: resign(t, h, signer=TokenSigner(h.app.state.keys.signing_keyrings(), issuer="bastion")),
    "wrong audience": lambda t, h: resign(t, h, audience="another-api"),
    "no audience": lambda t, h: resign(t, h, audience=None),
    # RFC 8725 §3.11: same key, same issuer, same claims, but an ID token's typ.
    "ID token as access token": lambda t, h: resign(t, h, typ="JWT"),
    "logout token as access token": lambda t, h: resign(t, h, typ="logout+jwt"),
    # An OAuth client's access token is not a session's, even with a sid.
    "another client_id": lambda t, h: resign(t, h, client_id="some-oauth-client"),
    "RS256 signed by us": lambda t, h: h.app.state.sessions.signer.sign(
        {"sub": parts(t)[1]["sub"], "sid": parts(t)[1]["sid"], "client_id": "bastion"},
        now=int(h.clock.now().timestamp()),
        ttl_seconds=60,
        alg="RS256",
        audience="bastion-api",
        typ="JWT",
    ),
    "not yet valid": not_yet_valid,
    "expired": expired,
}


@pytest.mark.parametrize("forgery", FORGERIES)
async def test_forged_access_token_is_refused(harness: Harness, forgery: str) -> None:
    tokens = await harness.signed_in(ALICE)
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(tokens))).status_code == 200
    forged = FORGERIES[forgery](tokens["access_token"], harness)
    response = await harness.client.get("/api/v1/me", headers={"authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
