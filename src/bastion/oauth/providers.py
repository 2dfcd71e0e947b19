"""Other providers users sign in with: Bastion as an OAuth 2.0 client and OpenID relying party.

- OpenID providers by discovery (OpenID Connect Discovery 1.0 §4): the
  metadata is fetched once per process and cached; its ``issuer`` must equal
  the configured issuer exactly (§4.3), and every endpoint it names must be
  ``https`` (``http`` to loopback only in dev: ``bastion.settings.url_allowed``).
- Plain OAuth 2.0 providers (GitHub) by the endpoints in the settings and a
  userinfo mapping (``subject_field``, ``email_field``, ``email_verified_field``).
- The code exchange (RFC 6749 §4.1.3, with the PKCE ``code_verifier`` of
  RFC 7636 §4.5) authenticates with ``client_secret_basic`` (RFC 6749 §2.3.1)
  when a secret is configured, as a public client otherwise.
- ID tokens (OpenID Connect Core §3.1.3.7): signature against the provider's
  JWKS (fetched again once when a ``kid`` is unknown: key rotation), ``iss``
  exact, ``aud`` contains our ``client_id`` (and ``azp`` is ours when there
  are several audiences or when present), ``exp`` and ``iat``, and ``nonce``
  equal to the one the flow sent.

The requests are built with httpx directly (no redirects followed, bounded
answers, a timeout): a token request is a few lines, and Authlib's httpx
integration (1.9) warns that its httpx support is deprecated.
Nothing here logs a token, a code or a secret.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from bastion.http.problems import BadRequest, Problem
from bastion.security import FOREIGN_ALGORITHMS, InvalidToken, constant_time_equals, s256, verify_jwt_with_jwks
from bastion.settings import ConfigError, OAuthProviderSettings, Settings, url_allowed

__all__ = [
    "ProviderError",
    "ProviderIdentity",
    "ProviderMetadata",
    "ProviderRegistry",
    "ProviderUnavailable",
    "Refused",
    "UpstreamProvider",
]

TIMEOUT = httpx.Timeout(10.0)
MAX_ANSWER = 1 << 20  # a metadata document, a JWKS or a token answer is a few KiB
# Clock skew tolerated between us and the provider (OpenID Core §3.1.3.7 leaves it to the client).
LEEWAY = 60
# A token whose kid we do not know makes us fetch the JWKS again (the provider rotated), this often at most.
JWKS_REFETCH = 60.0
# ID token signatures Bastion accepts from providers: asymmetric only (never "none" nor HS256 with the secret).
ID_TOKEN_ALGORITHMS = frozenset(FOREIGN_ALGORITHMS)


class ProviderUnavailable(Problem):
    status = 502
    title = "Bad Gateway"
    detail = "The sign-in provider could not be reached or answered unexpectedly. Try again later."


class ProviderError(BadRequest):
    """The one answer to any refused provider sign-in: what exactly failed is in the audit event, not here."""

    detail = "The sign-in with the provider could not be completed. Start again."


class Refused(InvalidToken):
    """A provider's answer failed ``check`` ("code", "signature", "iss", "aud", "azp", "iat", "sub", "nonce", …).

    The check's name goes into the audit event; the caller answers ``ProviderError`` whatever it is.
    """

    def __init__(self, check: str) -> None:
        super().__init__(check)
        self.check = check


@dataclass(frozen=True)
class ProviderMetadata:
    """What Bastion uses of a provider's metadata (OpenID Discovery §3, RFC 8414 §2)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str | None
    jwks_uri: str | None
    id_token_algorithms: frozenset[str]
    # RFC 9207 §3: the provider sends ``iss`` with every authorization response.
    iss_parameter: bool


@dataclass(frozen=True)
class ProviderIdentity:
    """Who the provider says signed in: (``issuer``, ``subject``) is the key; the address is only information."""

    issuer: str
    subject: str
    email: str | None
    email_verified: bool


@dataclass
class UpstreamProvider:
    settings: OAuthProviderSettings
    mode: str
    client_secret: str | None
    transport: httpx.AsyncBaseTransport | None = None
    jwks_refetch: float = JWKS_REFETCH
    _metadata: ProviderMetadata | None = field(default=None, repr=False)
    _jwks: dict[str, Any] | None = field(default=None, repr=False)
    _jwks_at: float = field(default=0.0, repr=False)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def is_openid(self) -> bool:
        return self.settings.kind == "oidc"

    # --- metadata and keys ----------------------------------------------

    async def metadata(self) -> ProviderMetadata:
        """Discovery once, then the cached answer (OpenID Discovery §4)."""
        if self._metadata is None:
            self._metadata = await self._discover() if self.is_openid else self._configured()
        return self._metadata

    def _configured(self) -> ProviderMetadata:
        config = self.settings
        assert config.authorization_endpoint  # noqa: S101 - the settings' validator
        assert config.token_endpoint  # noqa: S101
        return ProviderMetadata(
            issuer=config.issuer,
            authorization_endpoint=config.authorization_endpoint,
            token_endpoint=config.token_endpoint,
            userinfo_endpoint=config.userinfo_endpoint,
            jwks_uri=None,
            id_token_algorithms=frozenset(),
            iss_parameter=False,
        )

    async def _discover(self) -> ProviderMetadata:
        document = await self._get_json(self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration")
        # OpenID Discovery §4.3: the issuer in the answer is exactly the one we asked (no mix-up of providers).
        if document.get("issuer") != self.settings.issuer:
            raise ProviderUnavailable
        endpoints = {
            name: document.get(name)
            for name in ("authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint")
        }
        for name, url in endpoints.items():
            required = name != "userinfo_endpoint"
            if (url is None and required) or (url is not None and not self._url_ok(url)):
                raise ProviderUnavailable
        algorithms = document.get("id_token_signing_alg_values_supported") or ["RS256"]
        return ProviderMetadata(
            issuer=self.settings.issuer,
            authorization_endpoint=str(endpoints["authorization_endpoint"]),
            token_endpoint=str(endpoints["token_endpoint"]),
            userinfo_endpoint=endpoints["userinfo_endpoint"],
            jwks_uri=str(endpoints["jwks_uri"]),
            id_token_algorithms=frozenset(algorithms) & ID_TOKEN_ALGORITHMS
            if isinstance(algorithms, list)
            else frozenset(),
            iss_parameter=document.get("authorization_response_iss_parameter_supported") is True,
        )

    def _url_ok(self, url: object) -> bool:
        return isinstance(url, str) and url_allowed(url, self.mode)

    async def _keys(self, *, fresh: bool) -> dict[str, Any]:
        """The provider's JWKS, cached; ``fresh`` fetches it again, at most once per ``jwks_refetch`` seconds
        (bad tokens must not turn Bastion into a stream of requests to the provider)."""
        now = time.monotonic()
        if self._jwks is None or (fresh and now - self._jwks_at >= self.jwks_refetch):
            metadata = await self.metadata()
            assert metadata.jwks_uri is not None  # noqa: S101 - discovery requires it
            jwks = await self._get_json(metadata.jwks_uri)
            if not isinstance(jwks.get("keys"), list):
                raise ProviderUnavailable
            self._jwks, self._jwks_at = jwks, now
        return self._jwks

    # --- the authorization request --------------------------------------

    async def authorization_url(self, *, redirect_uri: str, state: str, nonce: str, code_verifier: str) -> str:
        """The authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3 with S256, OpenID Core §3.1.2.1)."""
        metadata = await self.metadata()
        params = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.settings.scopes),
            "state": state,
            "code_challenge": s256(code_verifier),
            "code_challenge_method": "S256",
        }
        if self.is_openid:
            params["nonce"] = nonce
        return str(httpx.URL(metadata.authorization_endpoint).copy_merge_params(params))

    def check_response_issuer(self, metadata: ProviderMetadata, iss: str | None) -> bool:
        """RFC 9207 §2.4: an ``iss`` sent must be this provider's; one the provider promised must be sent."""
        if iss is None:
            return not metadata.iss_parameter
        return constant_time_equals(iss, metadata.issuer)

    # --- the token request and the identity -----------------------------

    async def identity(
        self, *, code: str, redirect_uri: str, code_verifier: str, nonce: str, now: int
    ) -> ProviderIdentity:
        """Exchange ``code`` and say who signed in; ``InvalidToken`` for a token that fails any check."""
        metadata = await self.metadata()
        answer = await self._token_request(metadata, code=code, redirect_uri=redirect_uri, code_verifier=code_verifier)
        access_token = answer.get("access_token")
        if self.is_openid:
            id_token = answer.get("id_token")
            if not isinstance(id_token, str):
                raise Refused("id_token_missing")
            claims = await self.verify_id_token(id_token, nonce=nonce, now=now)
            email, verified = claims.get("email"), claims.get("email_verified") is True
            if email is None and metadata.userinfo_endpoint and isinstance(access_token, str):
                info = await self._userinfo(metadata.userinfo_endpoint, access_token)
                # OpenID Core §5.3.2: the userinfo sub must be the ID token's, or it is not used.
                if info.get("sub") == claims["sub"]:
                    email, verified = info.get("email"), info.get("email_verified") is True
            return ProviderIdentity(
                metadata.issuer, str(claims["sub"]), email if isinstance(email, str) else None, verified
            )
        if not isinstance(access_token, str) or metadata.userinfo_endpoint is None:
            raise Refused("access_token_missing")
        return self._mapped(await self._userinfo(metadata.userinfo_endpoint, access_token), metadata.issuer)

    def _mapped(self, info: dict[str, Any], issuer: str) -> ProviderIdentity:
        """A plain OAuth 2.0 provider's userinfo answer, through the configured mapping."""
        config = self.settings
        subject, email = info.get(config.subject_field), info.get(config.email_field)
        if not isinstance(subject, str | int) or isinstance(subject, bool) or str(subject) == "":
            raise Refused("sub")
        verified = config.email_verified_field is not None and info.get(config.email_verified_field) is True
        return ProviderIdentity(issuer, str(subject), email if isinstance(email, str) else None, verified)

    async def verify_id_token(self, token: str, *, nonce: str, now: int) -> dict[str, Any]:
        """OpenID Connect Core §3.1.3.7, steps 2-11 that apply to the code flow; ``InvalidToken`` otherwise."""
        metadata = await self.metadata()
        algorithms = metadata.id_token_algorithms or {"RS256"}
        try:
            _, claims = verify_jwt_with_jwks(
                token, await self._keys(fresh=False), algorithms=algorithms, typ=None, now=now, leeway=LEEWAY
            )
        except InvalidToken:
            # An unknown kid may be a key the provider rotated in since we cached its JWKS: fetch once more.
            try:
                _, claims = verify_jwt_with_jwks(
                    token, await self._keys(fresh=True), algorithms=algorithms, typ=None, now=now, leeway=LEEWAY
                )
            except InvalidToken:
                raise Refused("signature_or_times") from None
        client_id = self.settings.client_id
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        azp = claims.get("azp")
        several = isinstance(audiences, list) and len(audiences) > 1
        checks = {
            "iss": claims.get("iss") == metadata.issuer,
            "aud": isinstance(audiences, list) and client_id in audiences,
            "azp": azp == client_id if azp is not None or several else True,
            "iat": isinstance(claims.get("iat"), int) and claims["iat"] - LEEWAY <= now,
            "sub": isinstance(claims.get("sub"), str) and 0 < len(claims["sub"]) <= 255,
            "nonce": isinstance(claims.get("nonce"), str) and constant_time_equals(claims["nonce"], nonce),
        }
        for check, passed in checks.items():
            if not passed:
                raise Refused(check)
        return claims

    async def _token_request(
        self, metadata: ProviderMetadata, *, code: str, redirect_uri: str, code_verifier: str
    ) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        headers = {"accept": "application/json"}
        if self.client_secret is None:
            form["client_id"] = self.settings.client_id
        else:
            # RFC 6749 §2.3.1: both parts form-urlencoded before the Basic encoding.
            pair = f"{quote(self.settings.client_id, safe='')}:{quote(self.client_secret, safe='')}"
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        async with self._client() as http:
            try:
                response = await http.post(metadata.token_endpoint, data=form, headers=headers)
            except httpx.HTTPError:
                raise ProviderUnavailable from None
        if response.status_code == 400:  # invalid_grant and friends: this code is refused, not an outage
            raise Refused("code")
        if response.status_code == 401:  # invalid_client: our client id or secret is wrong (RFC 6749 §5.2)
            raise Refused("client_authentication")
        return self._json_of(response)

    async def _userinfo(self, url: str, access_token: str) -> dict[str, Any]:
        async with self._client() as http:
            try:
                response = await http.get(
                    url, headers={"authorization": f"Bearer {access_token}", "accept": "application/json"}
                )
            except httpx.HTTPError:
                raise ProviderUnavailable from None
        return self._json_of(response)

    async def _get_json(self, url: str) -> dict[str, Any]:
        if not self._url_ok(url):
            raise ProviderUnavailable
        async with self._client() as http:
            try:
                response = await http.get(url, headers={"accept": "application/json"})
            except httpx.HTTPError:
                raise ProviderUnavailable from None
        return self._json_of(response)

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, transport=self.transport)

    @staticmethod
    def _json_of(response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200 or len(response.content) > MAX_ANSWER:
            raise ProviderUnavailable
        try:
            value = json.loads(response.content)
        except ValueError:
            raise ProviderUnavailable from None
        if not isinstance(value, dict):
            raise ProviderUnavailable
        return value


class ProviderRegistry:
    """The configured providers by name, each reading its client secret from its file once."""

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._providers = {
            config.name: UpstreamProvider(config, settings.mode, _read_secret(config), transport)
            for config in settings.oauth.providers
        }

    def names(self) -> list[str]:
        return sorted(self._providers)

    def get(self, name: str) -> UpstreamProvider | None:
        return self._providers.get(name)


def _read_secret(config: OAuthProviderSettings) -> str | None:
    if config.client_secret_file is None:
        return None
    try:
        secret = config.client_secret_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"provider {config.name}: client_secret_file {config.client_secret_file} cannot be read ({exc.strerror})"
        ) from None
    if not secret:
        raise ConfigError(f"provider {config.name}: client_secret_file {config.client_secret_file} is empty")
    return secret
