"""Bastion as an OpenID provider, driven from Python by Authlib's client (which we did not write).

Authlib's ``AsyncOAuth2Client`` builds the authorization URL with PKCE S256,
checks ``state`` on the callback, exchanges the code, refreshes, asks for
client credentials with ``client_secret_basic`` and ``private_key_jwt``
(RFC 7523, ``aud`` the issuer) and revokes; its OpenID Connect
``CodeIDToken`` validates the ID token (iss, aud, exp, iat, nonce, at_hash)
after joserfc checked its signature against the provider's JWKS. The person
at the hosted pages is tests/oauth_flow.py, over HTTP/1.1 and HTTP/2.

ASVS 5.0: V10.2.1 (PKCE), V10.4.5 (refresh rotation), V10.4.8 (client
authentication), V10.5.1-V10.5.3 (ID token validation by the RP).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.jwk import KeySet, OKPKey
from relying import PASSWORD, REDIRECT_URI, Provider, provider

from oauth_flow import Person, authorize, query

pytestmark = [
    pytest.mark.e2e,
    # Authlib announces its move to httpx2 and joserfc; the client API used here stays.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*deprecated.*"),
]

both_versions = pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])


@pytest.fixture(scope="module")
def op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    with provider(tmp_path_factory.mktemp("op") / "data") as served:
        yield served


def metadata(op: Provider) -> dict[str, Any]:
    with op.served.client() as plain:
        return dict(plain.get("/.well-known/openid-configuration").json())


def validated_id_token(op: Provider, token: dict[str, Any], client_id: str, nonce: str) -> dict[str, Any]:
    """Signature against the JWKS (joserfc), then Authlib's OpenID Core §3.1.3.7 checks."""
    with op.served.client() as plain:
        keys = KeySet.import_key_set(plain.get(metadata(op)["jwks_uri"]).json())
    decoded = jwt.decode(token["id_token"], keys, algorithms=["RS256", "EdDSA", "ES256"])
    claims = CodeIDToken(
        decoded.claims,
        decoded.header,
        {"iss": {"essential": True, "value": op.issuer}},
        {"nonce": nonce, "client_id": client_id, "access_token": token["access_token"]},
    )
    claims.validate(now=int(time.time()), leeway=5)
    return dict(decoded.claims)


class ShortLivedAssertion(PrivateKeyJWT):  # type: ignore[misc]
    """Authlib's private_key_jwt with a one-minute assertion: its default (an hour) is more than
    Bastion takes (at most five minutes, RFC 7523 §3 item 4 lets the server bound exp)."""

    def sign(self, auth: Any, token_endpoint: str) -> str:
        return str(
            private_key_jwt_sign(
                auth.client_secret,
                client_id=auth.client_id,
                token_endpoint=token_endpoint,
                alg=self.alg,
                header=self.headers,
                expires_in=60,
            )
        )


def rp(op: Provider, created: dict[str, Any], **more: Any) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        created["client_id"],
        created.get("client_secret"),
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
        verify=op.served.tls(),
        **more,
    )


@both_versions
async def test_code_flow_with_pkce_and_refresh(op: Provider, http2: bool) -> None:
    found = metadata(op)
    created = op.client()
    email = op.user()
    verifier, nonce = generate_token(48), generate_token(20)
    async with rp(op, created, scope="openid email offline_access") as client:
        url, state = client.create_authorization_url(
            found["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        assert query(url)["code_challenge_method"] == "S256"
        async with op.browser(http2=http2) as browser:
            flow = await authorize(browser, url, Person(email, PASSWORD))
        assert flow.callback is not None, flow.last.text[:400]
        assert query(flow.callback)["iss"] == op.issuer  # RFC 9207
        token = await client.fetch_token(
            found["token_endpoint"], authorization_response=flow.callback, state=state, code_verifier=verifier
        )
        claims = validated_id_token(op, token, created["client_id"], nonce)
        assert claims["email"] == email or "email" not in claims

        info = await client.get(found["userinfo_endpoint"])
        assert info.status_code == 200
        assert info.json()["sub"] == claims["sub"]

        refreshed = await client.refresh_token(found["token_endpoint"], refresh_token=token["refresh_token"])
        assert refreshed["refresh_token"] != token["refresh_token"]
        # The spent one again: invalid_grant (Authlib raises the server's error).
        with pytest.raises(OAuthError, match="invalid_grant"):
            await client.refresh_token(found["token_endpoint"], refresh_token=token["refresh_token"])

        revoked = await client.revoke_token(found["revocation_endpoint"], token=refreshed["access_token"])
        assert revoked.status_code == 200


async def test_a_wrong_code_verifier_is_refused(op: Provider) -> None:
    found = metadata(op)
    created = op.client()
    async with rp(op, created, scope="openid") as client:
        url, state = client.create_authorization_url(found["authorization_endpoint"], code_verifier=generate_token(48))
        async with op.browser() as browser:
            flow = await authorize(browser, url, Person(op.user(), PASSWORD))
        assert flow.callback is not None
        with pytest.raises(OAuthError, match="invalid_grant"):
            await client.fetch_token(
                found["token_endpoint"],
                authorization_response=flow.callback,
                state=state,
                code_verifier=generate_token(48),
            )


async def test_client_credentials_with_client_secret_basic(op: Provider) -> None:
    found = metadata(op)
    created = op.client(redirect_uris=(), grants=("client_credentials",), scopes=("me:read",))
    async with rp(op, created, scope="me:read", token_endpoint_auth_method="client_secret_basic") as client:
        token = await client.fetch_token(found["token_endpoint"], grant_type="client_credentials")
    assert token["token_type"].lower() == "bearer"
    assert "refresh_token" not in token
    assert "id_token" not in token


async def test_client_credentials_with_private_key_jwt(op: Provider, tmp_path_factory: pytest.TempPathFactory) -> None:
    found = metadata(op)
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "authlib-1", "alg": "EdDSA", "use": "sig"})
    jwks = tmp_path_factory.mktemp("jwks") / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    created = op.client(
        redirect_uris=(),
        grants=("client_credentials",),
        scopes=("me:read",),
        options=("--jwks-file", str(jwks)),
    )
    # RFC 7523 §3 with aud the issuer exactly (what Bastion requires).
    auth = ShortLivedAssertion(op.issuer, alg="EdDSA", headers={"kid": "authlib-1"})
    async with AsyncOAuth2Client(
        created["client_id"], key, token_endpoint_auth_method=auth, scope="me:read", verify=op.served.tls()
    ) as client:
        token = await client.fetch_token(found["token_endpoint"], grant_type="client_credentials")
        assert token["access_token"]
        # Authlib makes a new jti for each assertion: a second grant works too.
        assert (await client.fetch_token(found["token_endpoint"], grant_type="client_credentials"))["access_token"]
    # An assertion for the token endpoint's URL instead of the issuer: refused.
    wrong_aud = ShortLivedAssertion(found["token_endpoint"], alg="EdDSA", headers={"kid": "authlib-1"})
    async with AsyncOAuth2Client(
        created["client_id"], key, token_endpoint_auth_method=wrong_aud, scope="me:read", verify=op.served.tls()
    ) as client:
        with pytest.raises(OAuthError, match="invalid_client"):
            await client.fetch_token(found["token_endpoint"], grant_type="client_credentials")


def test_the_token_endpoint_error_shape(op: Provider) -> None:
    """RFC 6749 §5.2 JSON, seen by a plain client: unknown client, duplicate parameter."""
    found = metadata(op)
    with httpx.Client(verify=op.served.tls()) as plain:
        unknown = plain.post(
            found["token_endpoint"], data={"grant_type": "client_credentials"}, auth=("nobody", "nothing")
        )
        assert unknown.status_code == 401
        assert unknown.json()["error"] == "invalid_client"
        assert unknown.headers["www-authenticate"].lower().startswith("basic")
        duplicated = plain.post(
            found["token_endpoint"],
            content="grant_type=client_credentials&grant_type=client_credentials",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert duplicated.status_code == 400
        assert duplicated.json()["error"] == "invalid_request"


async def test_authlib_default_hour_long_assertion_is_refused(
    op: Provider, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Authlib's own default assertion lives an hour: more than Bastion's five minutes, refused."""
    found = metadata(op)
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "authlib-2", "alg": "EdDSA", "use": "sig"})
    jwks = tmp_path_factory.mktemp("jwks") / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    created = op.client(
        redirect_uris=(), grants=("client_credentials",), scopes=("me:read",), options=("--jwks-file", str(jwks))
    )
    auth = PrivateKeyJWT(op.issuer, alg="EdDSA", headers={"kid": "authlib-2"})
    async with AsyncOAuth2Client(
        created["client_id"], key, token_endpoint_auth_method=auth, scope="me:read", verify=op.served.tls()
    ) as client:
        with pytest.raises(OAuthError, match="invalid_client"):
            await client.fetch_token(found["token_endpoint"], grant_type="client_credentials")
