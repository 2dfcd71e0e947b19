"""``UpstreamProvider`` against scripted providers (httpx.MockTransport plays the remote side).

What the real oidc-provider tests (tests/e2e/oauth/upstream) cannot make it
do: rotate its signing key between two sign-ins, answer with a GitHub-shaped
userinfo (a numeric ``id``, no ``email_verified``), publish metadata with an
``http`` endpoint in prod, or sign with ``none``/HS256.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from bastion.oauth.providers import ProviderUnavailable, Refused, UpstreamProvider
from bastion.settings import OAuthProviderSettings

ISSUER = "https://accounts.example"
CALLBACK = "https://127.0.0.1:8443/api/v1/auth/providers/up/callback"


def _key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "alg": "RS256", "use": "sig"})


class Scripted:
    """A provider: discovery, a JWKS of ``keys``, and a token endpoint answering ``answer``."""

    def __init__(self, keys: list[RSAKey]) -> None:
        self.keys = keys
        self.answer: dict[str, Any] = {}
        self.userinfo: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {
            "issuer": ISSUER,
            "authorization_endpoint": f"{ISSUER}/authorize",
            "token_endpoint": f"{ISSUER}/token",
            "jwks_uri": f"{ISSUER}/jwks",
            "userinfo_endpoint": f"{ISSUER}/userinfo",
            "id_token_signing_alg_values_supported": ["RS256"],
        }
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        path = request.url.path
        if path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=self.metadata)
        if path == "/jwks":
            return httpx.Response(200, json={"keys": [key.as_dict(private=False) for key in self.keys]})
        if path == "/token":
            return httpx.Response(200, json=self.answer)
        if path in ("/userinfo", "/user"):
            return httpx.Response(200, json=self.userinfo)
        return httpx.Response(404)

    def id_token(self, key: RSAKey | OctKey, *, alg: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "sub": "user-1", "aud": "bastion", "iat": now, "exp": now + 300, "nonce": "n-1"}
        header = {"alg": alg, "kid": key.kid} if key.kid else {"alg": alg}
        return jwt.encode(header, {**body, **claims}, key, algorithms=[alg])


def _b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def _provider(script: Scripted, *, mode: str = "dev", refetch: float = 60.0, **settings: Any) -> UpstreamProvider:
    config = OAuthProviderSettings(name="up", issuer=ISSUER, client_id="bastion", **settings)
    return UpstreamProvider(config, mode, "the-secret", httpx.MockTransport(script), jwks_refetch=refetch)


async def _identity(provider: UpstreamProvider) -> Any:
    return await provider.identity(
        code="c", redirect_uri=CALLBACK, code_verifier="v" * 43, nonce="n-1", now=int(time.time())
    )


async def test_a_key_rotated_in_after_the_jwks_was_cached_is_fetched_once_more() -> None:
    old, new = _key("old"), _key("new")
    script = Scripted([old])
    provider = _provider(script, refetch=0)  # as if the cached JWKS were older than the refetch interval
    script.answer = {"access_token": "at", "id_token": script.id_token(old, email="a@example.com")}
    assert (await _identity(provider)).subject == "user-1"
    script.keys = [old, new]
    script.answer = {"access_token": "at", "id_token": script.id_token(new, email="a@example.com")}
    assert (await _identity(provider)).email == "a@example.com"
    assert [request.url.path for request in script.seen].count("/jwks") == 2
    assert [request.url.path for request in script.seen].count("/.well-known/openid-configuration") == 1


async def test_bad_tokens_refetch_the_jwks_at_most_once_per_interval() -> None:
    script = Scripted([_key("k")])
    provider = _provider(script)
    for _ in range(3):
        script.answer = {"access_token": "at", "id_token": script.id_token(_key("unknown"))}
        with pytest.raises(Refused):
            await _identity(provider)
    assert [request.url.path for request in script.seen].count("/jwks") == 1


async def test_a_token_signed_by_a_key_outside_the_jwks_is_refused() -> None:
    script = Scripted([_key("k")])
    provider = _provider(script)
    script.answer = {"access_token": "at", "id_token": script.id_token(_key("k"))}  # same kid, another key
    with pytest.raises(Refused) as refused:
        await _identity(provider)
    assert refused.value.check == "signature_or_times"


@pytest.mark.parametrize("alg", ["HS256", "none"])
async def test_symmetric_and_unsigned_id_tokens_are_refused(alg: str) -> None:
    script = Scripted([_key("k")])
    provider = _provider(script)
    if alg == "none":
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": "u", "aud": "bastion", "iat": now, "exp": now + 60, "nonce": "n-1"}
        token = f"{_b64({'alg': 'none'})}.{_b64(claims)}."
    else:
        token = script.id_token(OctKey.import_key(b"the-secret" * 4), alg="HS256")
    script.answer = {"access_token": "at", "id_token": token}
    with pytest.raises(Refused):
        await _identity(provider)


async def test_the_code_exchange_sends_the_verifier_and_basic_client_authentication() -> None:
    key = _key("k")
    script = Scripted([key])
    script.answer = {"access_token": "at", "id_token": script.id_token(key)}
    await _identity(_provider(script))
    [token_request] = [request for request in script.seen if request.url.path == "/token"]
    form = dict(httpx.QueryParams(token_request.content.decode()))
    assert form == {
        "grant_type": "authorization_code",
        "code": "c",
        "redirect_uri": CALLBACK,
        "code_verifier": "v" * 43,
    }
    assert token_request.headers["authorization"] == "Basic " + base64.b64encode(b"bastion:the-secret").decode()


async def test_userinfo_of_another_subject_is_not_used() -> None:
    """OpenID Core §5.3.2: the address comes from userinfo only when its sub is the ID token's."""
    key = _key("k")
    script = Scripted([key])
    script.answer = {"access_token": "at", "id_token": script.id_token(key)}
    script.userinfo = {"sub": "someone-else", "email": "victim@example.com", "email_verified": True}
    who = await _identity(_provider(script))
    assert (who.email, who.email_verified) == (None, False)


async def test_a_github_shaped_provider_by_explicit_endpoints() -> None:
    """A numeric ``id`` is the subject; without an ``email_verified_field`` no address counts as verified
    (such an account can only be linked, never created)."""
    script = Scripted([])
    script.answer = {"access_token": "gho_x", "token_type": "bearer"}
    script.userinfo = {"id": 12345, "login": "octocat", "email": "octo@example.com"}
    provider = _provider(
        script,
        kind="oauth2",
        authorization_endpoint=f"{ISSUER}/login/oauth/authorize",
        token_endpoint=f"{ISSUER}/token",
        userinfo_endpoint=f"{ISSUER}/user",
        subject_field="id",
        email_verified_field=None,
        scopes=["read:user", "user:email"],
    )
    url = await provider.authorization_url(redirect_uri=CALLBACK, state="s", nonce="n", code_verifier="v" * 43)
    assert "nonce" not in httpx.URL(url).params
    who = await _identity(provider)
    assert (who.issuer, who.subject, who.email, who.email_verified) == (ISSUER, "12345", "octo@example.com", False)
    [userinfo] = [request for request in script.seen if request.url.path == "/user"]
    assert userinfo.headers["authorization"] == "Bearer gho_x"
    assert not any(request.url.path.startswith("/.well-known") for request in script.seen)


@pytest.mark.parametrize(
    ("change", "mode"),
    [
        ({"issuer": ISSUER + "/"}, "dev"),
        ({"token_endpoint": "http://accounts.example/token"}, "prod"),
        ({"jwks_uri": "http://127.0.0.1/jwks"}, "prod"),
        ({"authorization_endpoint": None}, "dev"),
    ],
)
async def test_metadata_with_another_issuer_or_an_insecure_endpoint_is_not_used(
    change: dict[str, Any], mode: str
) -> None:
    """V10.5.3: OpenID Discovery §4.3, and https everywhere in prod."""
    script = Scripted([_key("k")])
    script.metadata.update(change)
    with pytest.raises(ProviderUnavailable):
        await _provider(script, mode=mode).metadata()
