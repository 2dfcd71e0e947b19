"""Bastion as an OpenID provider, driven by relying parties we did not write.

openid-client (an OpenID-certified relying party) and oauth4webapi, from
tests/e2e/oauth/rp, talk to a real ``bastion serve`` over TLS: discovery,
authorization code with PKCE S256, state and nonce, refresh token rotation
and reuse detection, client credentials, userinfo, introspection,
revocation, PAR, DPoP and RP-initiated logout. The libraries build every
request and check every response themselves (ID token signature against the
JWKS, ``iss``/``aud``/``nonce``/``azp``, ``iss`` in the authorization
response per RFC 9207, DPoP-bound ``token_type``); the test plays only the
person at the hosted pages (tests/oauth_flow.py), over HTTP/1.1 and HTTP/2.

ASVS 5.0: V10.1.1 (tokens only to the components that need them), V10.2.1
(PKCE S256 against code interception), V10.4.1 (exact redirect URIs),
V10.4.2 (single-use codes), V10.4.5 (refresh token rotation and replay
revocation), V10.4.8 (client authentication at the token endpoint), V10.3.5
(sender-constrained tokens: DPoP), V10.5.1-V10.5.3 (ID token validated by
the RP: signature, iss, aud, nonce), V10.6.2 (RP-initiated logout).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from relying import LOGOUT_URI, PASSWORD, REDIRECT_URI, Provider, provider, require_node

from oauth_flow import Flow, Person, authorize, query

pytestmark = pytest.mark.e2e

both_versions = pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])


@pytest.fixture(scope="module")
def op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    require_node()
    with provider(tmp_path_factory.mktemp("op") / "data") as served:
        yield served


def rp_client(created: dict[str, Any], auth: str = "client_secret_basic", **more: Any) -> dict[str, Any]:
    return {"client_id": created["client_id"], "client_secret": created.get("client_secret"), "auth": auth, **more}


def refused(answer: dict[str, Any], error: str) -> None:
    """The library raised the server's RFC 6749 §5.2 error ``error``."""
    assert not answer["ok"], answer
    assert answer.get("oauth_error") == error, answer


def landed(flow: Flow, uri: str) -> str:
    """The redirect to ``uri`` the flow ended with."""
    assert flow.callback is not None, flow.last.text[:500]
    assert flow.callback.startswith(uri + "?"), flow.callback
    return flow.callback


def no_code(flow: Flow) -> None:
    """The flow ended without a code: on an error page, or redirected with an error."""
    assert "code" not in (query(flow.callback) if flow.callback else {}), flow.callback


def header(jwt: str) -> dict[str, Any]:
    part = jwt.split(".", maxsplit=1)[0]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


async def signed_in_code(
    op: Provider, client: dict[str, Any], email: str, *, http2: bool = False, **step: Any
) -> tuple[dict[str, Any], str]:
    """openid-client builds the authorization URL; the person signs in and consents; the callback URL."""
    started = op.ok({"op": "authorize_url", "client": client, "redirect_uri": REDIRECT_URI, **step})
    async with op.browser(http2=http2) as browser:
        flow = await authorize(browser, started["url"], Person(email, PASSWORD))
        assert browser.cookies, "the hosted pages keep the sign-in in a cookie"
    assert "sign-in" in flow.seen
    return started, landed(flow, REDIRECT_URI)


def test_discovery_as_openid_client_reads_it(op: Provider) -> None:
    found = op.ok({"op": "discover", "client": {"client_id": "x", "auth": "none"}})["metadata"]
    assert found["issuer"] == op.issuer
    for endpoint in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
                     "pushed_authorization_request_endpoint", "revocation_endpoint",
                     "introspection_endpoint", "end_session_endpoint"):  # fmt: skip
        assert found[endpoint].startswith(op.issuer + "/"), endpoint
    assert found["code_challenge_methods_supported"] == ["S256"]
    assert found["response_types_supported"] == ["code"]
    assert "RS256" in found["id_token_signing_alg_values_supported"]
    assert found["authorization_response_iss_parameter_supported"] is True
    assert "me:read" in found["scopes_supported"]
    assert not {"implicit", "password"} & set(found["grant_types_supported"])


@both_versions
async def test_code_flow_with_pkce_then_userinfo_refresh_introspect_revoke(op: Provider, http2: bool) -> None:
    created = op.client()
    client = rp_client(created)
    email = op.user()
    started, callback = await signed_in_code(
        op, client, email, http2=http2, scope="openid profile email offline_access me:read"
    )
    params = query(callback)
    assert params["iss"] == op.issuer  # RFC 9207
    assert params["state"] == started["state"]

    # openid-client checks state, iss, the ID token's signature (JWKS), iss, aud, exp, nonce.
    exchanged = op.ok({"op": "exchange", "client": client, "callback_url": callback, **started})
    tokens, claims = exchanged["tokens"], exchanged["claims"]
    assert tokens["token_type"].lower() == "bearer"
    assert claims["iss"] == op.issuer
    assert claims["aud"] in (created["client_id"], [created["client_id"]])
    assert claims["nonce"] == started["nonce"]
    assert {"auth_time", "amr"} <= claims.keys()
    assert "pwd" in claims["amr"]
    assert header(tokens["id_token"])["alg"] == "RS256"  # the default (OpenID Core §3.1.3.7)
    assert header(tokens["access_token"])["typ"].lower() in ("at+jwt", "application/at+jwt")  # RFC 9068

    info = op.ok({"op": "userinfo", "client": client, "access_token": tokens["access_token"], "sub": claims["sub"]})
    assert info["userinfo"]["sub"] == claims["sub"]
    assert info["userinfo"]["email"] == email

    # The access token calls Bastion's own API with what was granted (me:read).
    me = op.ok({"op": "resource", "client": client, "access_token": tokens["access_token"],
                "url": op.issuer + "/api/v1/me"})  # fmt: skip
    assert me["status"] == 200
    assert me["body"]["email"] == email

    seen = op.ok({"op": "introspect", "client": client, "token": tokens["access_token"]})["introspection"]
    assert seen["active"] is True
    assert seen["client_id"] == created["client_id"]
    assert seen["sub"] == claims["sub"]

    # Refresh: a new pair; the old refresh token is spent.
    refreshed = op.ok({"op": "refresh", "client": client, "refresh_token": tokens["refresh_token"]})["tokens"]
    assert refreshed["refresh_token"] != tokens["refresh_token"]
    assert refreshed["access_token"] != tokens["access_token"]

    # Reuse of the spent refresh token (RFC 9700 §4.14.2): refused, and the whole grant dies.
    reused = op.node({"op": "refresh", "client": client, "refresh_token": tokens["refresh_token"]})
    refused(reused, "invalid_grant")
    after = op.node({"op": "refresh", "client": client, "refresh_token": refreshed["refresh_token"]})
    refused(after, "invalid_grant")
    dead = op.ok({"op": "introspect", "client": client, "token": refreshed["access_token"]})["introspection"]
    assert dead["active"] is False


async def test_revocation_ends_the_access_token(op: Provider) -> None:
    client = rp_client(op.client())
    started, callback = await signed_in_code(op, client, op.user(), scope="openid offline_access")
    tokens = op.ok({"op": "exchange", "client": client, "callback_url": callback, **started})["tokens"]
    op.ok({"op": "revoke", "client": client, "token": tokens["refresh_token"], "token_type_hint": "refresh_token"})
    again = op.node({"op": "refresh", "client": client, "refresh_token": tokens["refresh_token"]})
    refused(again, "invalid_grant")
    op.ok({"op": "revoke", "client": client, "token": tokens["access_token"]})
    seen = op.ok({"op": "introspect", "client": client, "token": tokens["access_token"]})["introspection"]
    assert seen == {"active": False}
    # RFC 7009 §2.2: revoking an unknown or already revoked token is still a success.
    op.ok({"op": "revoke", "client": client, "token": tokens["access_token"]})


async def test_a_code_exchanged_twice_is_refused_and_revokes_what_it_gave(op: Provider) -> None:
    client = rp_client(op.client())
    started, callback = await signed_in_code(op, client, op.user())
    tokens = op.ok({"op": "exchange", "client": client, "callback_url": callback, **started})["tokens"]
    second = op.node({"op": "exchange", "client": client, "callback_url": callback, **started})
    refused(second, "invalid_grant")
    seen = op.ok({"op": "introspect", "client": client, "token": tokens["access_token"]})["introspection"]
    assert seen["active"] is False


async def test_client_secret_post(op: Provider) -> None:
    created = op.client(options=("--auth-method", "client_secret_post"))
    client = rp_client(created, "client_secret_post")
    started, callback = await signed_in_code(op, client, op.user())
    exchanged = op.ok({"op": "exchange", "client": client, "callback_url": callback, **started})
    assert exchanged["claims"]["aud"] in (created["client_id"], [created["client_id"]])


def test_client_credentials_with_eddsa_tokens(op: Provider) -> None:
    created = op.client(
        redirect_uris=(), grants=("client_credentials",), scopes=("me:read",),
        options=("--access-token-alg", "EdDSA", "--id-token-alg", "EdDSA"),
    )  # fmt: skip
    client = rp_client(created)
    tokens = op.ok({"op": "client_credentials", "client": client, "scope": "me:read"})["tokens"]
    assert tokens["token_type"].lower() == "bearer"
    assert "refresh_token" not in tokens
    assert header(tokens["access_token"])["alg"] == "EdDSA"
    seen = op.ok({"op": "introspect", "client": client, "token": tokens["access_token"]})["introspection"]
    assert seen["active"] is True
    assert seen["client_id"] == created["client_id"]
    # A scope beyond the client's registration is refused.
    wider = op.node({"op": "client_credentials", "client": client, "scope": "records:*"})
    refused(wider, "invalid_scope")


def test_a_wrong_secret_is_invalid_client(op: Provider) -> None:
    created = op.client(redirect_uris=(), grants=("client_credentials",), scopes=("me:read",))
    wrong = op.node({"op": "client_credentials", "client": {**rp_client(created), "client_secret": "not-it"}})
    refused(wrong, "invalid_client")
    assert wrong.get("status") == 401, wrong


@both_versions
async def test_dpop_bound_tokens_with_openid_client(op: Provider, http2: bool) -> None:
    client = rp_client(op.client())
    email = op.user()
    started, callback = await signed_in_code(op, client, email, http2=http2, scope="openid me:read", dpop=True)
    exchanged = op.ok({"op": "exchange", "client": client, "callback_url": callback, **started, "dpop": True})
    tokens = exchanged["tokens"]
    assert tokens["token_type"].lower() == "dpop"  # the library lower-cases it
    key = {"dpop": True, "dpop_key": exchanged["dpop_key"]}
    info = op.ok({"op": "userinfo", "client": client, "access_token": tokens["access_token"], **key})
    assert info["userinfo"]["sub"] == exchanged["claims"]["sub"]
    me = op.ok({"op": "resource", "client": client, "access_token": tokens["access_token"],
                "url": op.issuer + "/api/v1/me", **key})  # fmt: skip
    assert me["status"] == 200
    assert me["body"]["email"] == email
    # The same token as a plain bearer token: refused (RFC 9449 §7.1).
    async with op.browser(http2=http2) as plain:
        bearer = await plain.get("/api/v1/me", headers={"authorization": f"Bearer {tokens['access_token']}"})
        assert bearer.status_code == 401
        userinfo = await plain.get("/oauth2/userinfo", headers={"authorization": f"Bearer {tokens['access_token']}"})
        assert userinfo.status_code == 401
    # With another key: refused.
    other = op.node({"op": "resource", "client": client, "access_token": tokens["access_token"],
                     "url": op.issuer + "/api/v1/me", "dpop": True})  # fmt: skip
    assert not other["ok"], other  # openid-client raises on the DPoP challenge
    assert other["status"] == 401


@both_versions
async def test_par_and_dpop_with_oauth4webapi(op: Provider, http2: bool) -> None:
    created = op.client(options=("--require-par", "--require-dpop"))
    client = rp_client(created)
    email = op.user()
    # A client that must push its requests: a plain authorization request is refused.
    plain = op.ok({"op": "authorize_url", "client": client, "redirect_uri": REDIRECT_URI})
    async with op.browser(http2=http2) as browser:
        no_code(await authorize(browser, plain["url"], Person(email, PASSWORD)))

    pushed = op.ok(
        {"op": "o4w_par_dpop", "client": client, "redirect_uri": REDIRECT_URI, "scope": "openid offline_access"}
    )
    assert pushed["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
    async with op.browser(http2=http2) as browser:
        flow = await authorize(browser, pushed["url"], Person(email, PASSWORD))
    exchanged = op.ok({"op": "o4w_exchange_dpop", "client": client, "callback_url": landed(flow, REDIRECT_URI),
                       "redirect_uri": REDIRECT_URI, **pushed})  # fmt: skip
    tokens = exchanged["tokens"]
    assert tokens["token_type"].lower() == "dpop"
    key = {"dpop_key": pushed["dpop_key"]}
    info = op.ok({"op": "o4w_userinfo_dpop", "client": client, "access_token": tokens["access_token"], **key})
    assert info["userinfo"]["sub"] == exchanged["claims"]["sub"]
    refreshed = op.ok({"op": "o4w_refresh_dpop", "client": client, "refresh_token": tokens["refresh_token"], **key})
    assert refreshed["tokens"]["token_type"].lower() == "dpop"
    # A client registered with --require-dpop: a refresh without a proof is refused. (Its refresh
    # token is bound to its client authentication, not to the key: RFC 9449 §5, confidential client.)
    rotated = refreshed["tokens"]["refresh_token"]
    plain_refresh = op.node({"op": "refresh", "client": client, "refresh_token": rotated})
    assert not plain_refresh["ok"], plain_refresh
    # A request_uri is single-use (RFC 9126 §4).
    async with op.browser(http2=http2) as browser:
        no_code(await authorize(browser, pushed["url"], Person(email, PASSWORD)))


async def test_end_session_url_logs_out(op: Provider) -> None:
    created = op.client(options=("--post-logout-redirect-uri", LOGOUT_URI))
    client = rp_client(created)
    email = op.user()
    started = op.ok({"op": "authorize_url", "client": client, "redirect_uri": REDIRECT_URI})
    async with op.browser() as browser:
        flow = await authorize(browser, started["url"], Person(email, PASSWORD))
        callback = landed(flow, REDIRECT_URI)
        tokens = op.ok({"op": "exchange", "client": client, "callback_url": callback, **started})["tokens"]
        logout = {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": LOGOUT_URI, "state": "bye"}
        url = op.ok({"op": "end_session_url", "client": client, "parameters": logout})["url"]
        assert url.startswith(op.issuer + "/oauth2/logout?")
        ended = await authorize(browser, url, Person(email, PASSWORD))
        assert query(landed(ended, LOGOUT_URI))["state"] == "bye"
        # Signed out: prompt=none now has no session to use (OpenID Core §3.1.2.6).
        silent = op.ok({"op": "authorize_url", "client": client, "redirect_uri": REDIRECT_URI,
                        "parameters": {"prompt": "none"}})  # fmt: skip
        after = await authorize(browser, silent["url"], None)
    assert query(landed(after, REDIRECT_URI))["error"] == "login_required"


async def test_private_key_jwt_client(op: Provider, tmp_path_factory: pytest.TempPathFactory) -> None:
    from joserfc.jwk import ECKey

    # ES256: oauth4webapi signs Ed25519 keys as "Ed25519" (RFC 9864's name), not "EdDSA".
    key = ECKey.generate_key("P-256", parameters={"kid": "rp-1", "alg": "ES256", "use": "sig"})
    jwks = tmp_path_factory.mktemp("jwks") / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    created = op.client(
        grants=("authorization_code", "client_credentials"), scopes=("openid", "me:read"),
        options=("--jwks-file", str(jwks)),
    )  # fmt: skip
    assert "client_secret" not in created or created["client_secret"] is None
    client = rp_client(created, "private_key_jwt", private_jwk=key.as_dict(private=True))
    tokens = op.ok({"op": "client_credentials", "client": client, "scope": "me:read"})["tokens"]
    assert tokens["access_token"]
    started, callback = await signed_in_code(op, client, op.user())
    assert op.ok({"op": "exchange", "client": client, "callback_url": callback, **started})["claims"]["sub"]
    # Another key than the registered one: invalid_client.
    stranger = ECKey.generate_key("P-256", parameters={"kid": "rp-1", "alg": "ES256"})
    wrong = op.node({"op": "client_credentials", "client": {**client, "private_jwk": stranger.as_dict(private=True)}})
    refused(wrong, "invalid_client")


async def test_a_native_app_public_client_on_any_loopback_port(op: Provider) -> None:
    """A public client (auth none, PKCE alone) with a loopback redirect URI: any port (RFC 8252 §7.3)."""
    created = op.client(redirect_uris=("http://127.0.0.1/callback",), options=("--public",))
    assert created.get("client_secret") is None
    client = {"client_id": created["client_id"], "auth": "none"}
    redirect = "http://127.0.0.1:53682/callback"
    started = op.ok({"op": "authorize_url", "client": client, "redirect_uri": redirect})
    async with op.browser() as browser:
        flow = await authorize(browser, started["url"], Person(op.user(), PASSWORD))
    exchanged = op.ok({"op": "exchange", "client": client, "callback_url": landed(flow, redirect), **started})
    assert exchanged["claims"]["aud"] in (created["client_id"], [created["client_id"]])
    # Another path on loopback is not the registered URI: an error page, no redirect.
    other = op.ok({"op": "authorize_url", "client": client, "redirect_uri": "http://127.0.0.1:53682/elsewhere"})
    async with op.browser() as browser:
        refused = await authorize(browser, other["url"], Person(op.user(), PASSWORD))
    assert refused.callback is None
    assert refused.last.status_code == 400
