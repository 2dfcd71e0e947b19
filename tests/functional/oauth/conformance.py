"""The OpenID conformance suite's side of its Basic OP and Config OP test plans, in process.

The suite (openid-certification/conformance-suite, ``OIDCCBasicTestPlan``
and ``OIDCCConfigTestPlan``) cannot run here: it is a Java server that a
person drives. ``Suite`` is what its modules do as a relying party, against
the app through the ASGI transport: it reads discovery and the JWKS, sends
authorization requests (a person at the hosted pages answers,
tests/oauth_flow.py), calls the token and userinfo endpoints with
``client_secret_basic`` or ``client_secret_post``, and validates ID tokens
with the checks of its ``ValidateIdToken*`` conditions. Each test in
test_conformance_*.py is one module, named after its ``testName``.

One deliberate difference from the suite's default requests: Bastion
requires PKCE S256 from every client (RFC 9700 §2.1.1), so every
authorization request here carries a ``code_challenge``; the suite's own
``oidcc-ensure-request-with-valid-pkce-succeeds`` is the module that sends
one, and a request without one is refused (tested there).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from bastion.oauth.clients import Client, ClientMetadata
from factories.oauth_clients import register_client
from harness import ADDRESS, PASSWORD, Harness
from oauth_flow import Flow, Person, authorize, query

REDIRECT_URI = "https://rp.example.org/callback"
SCOPE = "openid"


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def b64json(segment: str) -> dict[str, Any]:
    import json

    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


@dataclass
class Request:
    """One authorization request as the suite builds it, and what it must remember."""

    params: dict[str, str]
    verifier: str
    state: str
    nonce: str | None


@dataclass
class Tokens:
    response: dict[str, Any]
    id_claims: dict[str, Any]
    id_header: dict[str, Any]

    @property
    def access_token(self) -> str:
        return str(self.response["access_token"])


@dataclass
class Suite:
    harness: Harness
    browser: httpx.AsyncClient
    client: Client
    secret: str
    email: str
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        return self.harness.settings.auth.public_url

    def now(self) -> int:
        return int(self.harness.clock.now().timestamp())

    def path(self, endpoint: str) -> str:
        """An endpoint of discovery as a path (the ASGI client's base URL is the issuer)."""
        url = str(self.config[endpoint])
        assert url.startswith(self.issuer + "/"), url
        return url[len(self.issuer) :]

    # --- clients and people ---------------------------------------------

    async def new_client(self, **changes: Any) -> tuple[Client, str]:
        metadata = ClientMetadata(
            name="Conformance suite",
            redirect_uris=(REDIRECT_URI,),
            grant_types=("authorization_code", "refresh_token"),
            scopes=("openid", "profile", "email", "offline_access"),
        )
        client, secret = await register_client(self.harness.app, metadata, **changes)
        return client, secret or ""

    def person(self, **more: Any) -> Person:
        return Person(self.email, PASSWORD, **more)

    def fresh_browser(self) -> httpx.AsyncClient:
        """A user agent without cookies: the suite's "remove any cookies you may have received"."""
        return browser_for(self.harness)

    # --- the authorization endpoint -------------------------------------

    def request(self, client: Client | None = None, *, nonce: bool = True, **params: str | None) -> Request:
        client = client or self.client
        verifier = secrets.token_urlsafe(48)
        state = secrets.token_urlsafe(16)
        sent_nonce = secrets.token_urlsafe(16) if nonce else None
        base: dict[str, str | None] = {
            "client_id": client.id,
            "redirect_uri": REDIRECT_URI,
            "response_type": "code",
            "scope": SCOPE,
            "state": state,
            "nonce": sent_nonce,
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        }
        base.update(params)
        return Request({k: v for k, v in base.items() if v is not None}, verifier, state, sent_nonce)

    def url(self, request: Request) -> str:
        return self.config["authorization_endpoint"] + "?" + urllib.parse.urlencode(request.params)

    async def authorize(
        self,
        request: Request,
        person: Person | None,
        *,
        browser: httpx.AsyncClient | None = None,
        method: str = "GET",
    ) -> Flow:
        return await authorize(browser or self.browser, self.url(request), person, method=method, origin=self.issuer)

    def callback(self, flow: Flow, request: Request) -> dict[str, str]:
        """The authorization response at the redirect URI, with the suite's checks of it."""
        assert flow.callback is not None, f"no redirect ({flow.last.status_code}): {flow.last.text[:300]}"
        assert flow.callback.startswith(request.params.get("redirect_uri", REDIRECT_URI) + "?"), flow.callback
        params = query(flow.callback)
        # ValidateIssIfPresentInAuthorizationResponse (RFC 9207); CheckStateInAuthorizationResponse.
        assert params["iss"] == self.issuer
        assert params.get("state") == request.state
        return params

    def code(self, flow: Flow, request: Request) -> str:
        params = self.callback(flow, request)
        assert "error" not in params, params  # CheckIfAuthorizationEndpointError
        return params["code"]

    def error(self, flow: Flow, request: Request) -> dict[str, str]:
        """EnsureErrorFromAuthorizationEndpointResponse, RejectAuthCodeInAuthorizationEndpointResponse."""
        params = self.callback(flow, request)
        assert "error" in params, params
        assert "code" not in params
        # CheckForUnexpectedParametersInErrorResponseFromAuthorizationEndpoint
        assert set(params) <= {"error", "error_description", "error_uri", "state", "iss"}, params
        # CheckErrorDescriptionFromAuthorizationEndpointResponseErrorContainsCRLFTAB
        assert not any(ch in params.get("error_description", "") for ch in "\r\n\t")
        return params

    # --- the token endpoint ---------------------------------------------

    async def token(
        self, data: dict[str, str], *, client: Client | None = None, secret: str | None = None
    ) -> httpx.Response:
        client = client or self.client
        secret = self.secret if secret is None else secret
        if client.token_endpoint_auth_method == "client_secret_post":
            return await self.harness.client.post(
                self.path("token_endpoint"), data={**data, "client_id": client.id, "client_secret": secret}
            )
        return await self.harness.client.post(self.path("token_endpoint"), data=data, auth=(client.id, secret))

    async def exchange(
        self, code: str, request: Request, *, client: Client | None = None, secret: str | None = None
    ) -> httpx.Response:
        return await self.token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": request.params.get("redirect_uri", REDIRECT_URI),
                "code_verifier": request.verifier,
            },
            client=client,
            secret=secret,
        )

    async def tokens(
        self, response: httpx.Response, request: Request | None, *, client: Client | None = None
    ) -> Tokens:
        """CheckIfTokenEndpointResponseError, CheckForAccessTokenValue, ExtractExpiresIn…, then the ID token."""
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"  # RFC 6749 §5.1
        body = dict(response.json())
        assert body["access_token"]
        assert body["token_type"].lower() == "bearer"
        assert isinstance(body["expires_in"], int)
        assert body["expires_in"] > 0
        header, claims = await self.validate_id_token(
            body["id_token"], client=client, nonce=request.nonce if request else None, access_token=body["access_token"]
        )
        return Tokens(body, claims, header)

    async def code_flow(
        self,
        person: Person | None = None,
        *,
        client: Client | None = None,
        secret: str | None = None,
        browser: httpx.AsyncClient | None = None,
        **params: str | None,
    ) -> tuple[Tokens, Flow]:
        request = self.request(client, **params)
        flow = await self.authorize(request, person or self.person(), browser=browser)
        code = self.code(flow, request)
        return await self.tokens(
            await self.exchange(code, request, client=client, secret=secret), request, client=client
        ), flow

    # --- ID tokens (the suite's ValidateIdToken* conditions) -------------

    async def jwks(self) -> dict[str, Any]:
        response = await self.harness.client.get(self.path("jwks_uri"))
        assert response.status_code == 200
        return dict(response.json())

    async def validate_id_token(
        self, id_token: str, *, client: Client | None = None, nonce: str | None, access_token: str | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        client = client or self.client
        header = b64json(id_token.split(".", maxsplit=1)[0])
        # CheckIdTokenSignatureAlgorithm (never "none"), EnsureIdTokenContainsKid,
        # ValidateIdTokenSignatureUsingKid: the kid names exactly one key of the JWKS.
        assert header["alg"] == client.id_token_alg
        jwks = await self.jwks()
        matching = [key for key in jwks["keys"] if key.get("kid") == header["kid"]]
        assert len(matching) == 1, header
        decoded = jwt.decode(id_token, KeySet.import_key_set({"keys": matching}), algorithms=[header["alg"]])
        claims = dict(decoded.claims)
        now = self.now()
        # ValidateIdToken: iss, aud (azp when several), exp in the future, iat not in the future.
        assert claims["iss"] == self.issuer
        audience = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        assert client.id in audience
        if len(audience) > 1:
            assert claims["azp"] == client.id
        assert claims["exp"] > now
        assert claims["iat"] <= now
        # CheckForSubjectInIdToken; ValidateIdTokenStandardClaims (types).
        assert isinstance(claims["sub"], str)
        assert 0 < len(claims["sub"]) <= 255
        if "auth_time" in claims:
            assert isinstance(claims["auth_time"], int)
            assert claims["auth_time"] <= now
        # ValidateIdTokenNonce / ValidateIdTokenWithoutNonce.
        assert claims.get("nonce") == nonce
        # ValidateAtHash (OpenID Core §3.1.3.8), when present.
        if "at_hash" in claims and access_token is not None:
            digest = hashlib.sha256(access_token.encode()).digest()
            assert claims["at_hash"] == base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()
        return dict(decoded.header), claims

    # --- userinfo --------------------------------------------------------

    async def userinfo(self, access_token: str, *, method: str = "GET", in_body: bool = False) -> httpx.Response:
        if in_body:
            return await self.harness.client.post(self.path("userinfo_endpoint"), data={"access_token": access_token})
        headers = {"authorization": f"Bearer {access_token}"}
        return await self.harness.client.request(method, self.path("userinfo_endpoint"), headers=headers)


def browser_for(harness: Harness) -> httpx.AsyncClient:
    """A user agent on the public listener whose origin is the issuer (cookies follow its redirects)."""
    transport = httpx.ASGITransport(app=harness.app, client=(ADDRESS, 5000))
    return httpx.AsyncClient(transport=transport, base_url=harness.settings.auth.public_url)


@pytest.fixture
async def suite(harness: Harness) -> AsyncIterator[Suite]:
    """A registered static client (``client_secret_basic``), a user, and discovery read."""
    client, secret = await register_client(
        harness.app,
        ClientMetadata(
            name="Conformance suite",
            redirect_uris=(REDIRECT_URI,),
            grant_types=("authorization_code", "refresh_token"),
            scopes=("openid", "profile", "email", "offline_access"),
        ),
    )
    assert secret is not None
    user = await harness.user("suite-user@example.com")
    async with browser_for(harness) as browser:
        opened = Suite(harness, browser, client, secret, user.email)
        response = await harness.client.get("/.well-known/openid-configuration")
        assert response.status_code == 200, response.text
        opened.config = dict(response.json())
        yield opened
