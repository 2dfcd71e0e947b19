"""The OpenID conformance suite's Basic OP test plan (``oidcc-basic-certification-test-plan``), module by module.

Each test is one module of ``OIDCCBasicTestPlan`` (response_type ``code``,
``client_secret_basic`` unless the module says otherwise, a static client),
named after its ``testName`` and asserting what the module's conditions
assert; where the suite only warns, the test asserts Bastion's documented
choice. Modules for features Bastion deliberately lacks (unsigned ID tokens,
request objects by value or by reference) assert the documented refusal.
See conformance.py for the suite's side and its one deliberate difference
(PKCE on every request).

ASVS 5.0: V10.4.1 (exact redirect URIs; an unregistered one gets an error
page), V10.4.2 (single-use codes; a reused code revokes its tokens), V10.4.3
(codes live briefly), V10.5.1-V10.5.5 (ID token: signature, iss, aud, nonce,
auth_time with max_age), V10.4.5 (refresh tokens bound to their client).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conformance import REDIRECT_URI, Suite, b64json, suite

from bastion.oauth.clients import InvalidClientMetadata

__all__ = ["suite"]  # the fixture, imported for pytest

ERRORS_NEEDING_A_USER = {"interaction_required", "login_required", "account_selection_required", "consent_required"}


def unsigned_jwt(claims: dict[str, Any]) -> str:
    import base64

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}."


# --- the happy flows ---------------------------------------------------------


async def test_oidcc_server(suite: Suite) -> None:
    """OP-Response-code: a code, state and iss back, a token response, a valid ID token, userinfo."""
    tokens, flow = await suite.code_flow()
    assert "sign-in" in flow.seen
    assert tokens.id_header["alg"] == "RS256"
    # CallProtectedResource (the userinfo endpoint) with the access token.
    info = await suite.userinfo(tokens.access_token)
    assert info.status_code == 200
    assert info.json()["sub"] == tokens.id_claims["sub"]


async def test_oidcc_response_type_missing(suite: Suite) -> None:
    """No response_type: an error redirect (unsupported_response_type or invalid_request), or an error page."""
    request = suite.request(response_type=None)
    flow = await suite.authorize(request, suite.person())
    if flow.callback is None:
        assert flow.last.status_code == 400
        assert "text/html" in flow.last.headers["content-type"]
    else:
        assert suite.error(flow, request)["error"] in ("unsupported_response_type", "invalid_request")


async def test_oidcc_idtoken_signature(suite: Suite) -> None:
    """OP-IDToken-Signature and OP-IDToken-kid: RS256 by default, a kid of the JWKS, a valid signature."""
    tokens, _ = await suite.code_flow()
    assert tokens.id_header["alg"] == "RS256"
    assert tokens.id_header["kid"] in {key["kid"] for key in (await suite.jwks())["keys"]}


async def test_oidcc_idtoken_unsigned(suite: Suite) -> None:
    """OP-IDToken-none: Bastion never issues unsigned ID tokens; discovery does not list "none"."""
    assert "none" not in suite.config["id_token_signing_alg_values_supported"]
    with pytest.raises(InvalidClientMetadata):
        await suite.new_client(id_token_alg="none")


async def test_oidcc_userinfo_get(suite: Suite) -> None:
    tokens, _ = await suite.code_flow()
    info = await suite.userinfo(tokens.access_token)
    assert info.status_code == 200
    assert info.headers["content-type"].startswith("application/json")
    assert info.json()["sub"] == tokens.id_claims["sub"]


async def test_oidcc_userinfo_post_header(suite: Suite) -> None:
    tokens, _ = await suite.code_flow()
    info = await suite.userinfo(tokens.access_token, method="POST")
    assert info.status_code == 200
    assert info.json()["sub"] == tokens.id_claims["sub"]


async def test_oidcc_userinfo_post_body(suite: Suite) -> None:
    """The token in the form body (RFC 6750 §2.2) is optional: it works, or it is refused without data."""
    tokens, _ = await suite.code_flow()
    info = await suite.userinfo(tokens.access_token, in_body=True)
    if info.status_code == 200:
        assert info.json()["sub"] == tokens.id_claims["sub"]
    else:
        assert info.status_code in (400, 401)
        assert "sub" not in info.text


async def test_oidcc_ensure_request_without_nonce_succeeds_for_code_flow(suite: Suite) -> None:
    tokens, _ = await suite.code_flow(nonce=None)
    assert "nonce" not in tokens.id_claims


async def test_oidcc_scope_profile(suite: Suite) -> None:
    tokens, _ = await suite.code_flow(scope="openid profile")
    info = (await suite.userinfo(tokens.access_token)).json()
    assert info["sub"] == tokens.id_claims["sub"]
    assert "email" not in info  # only what was asked for (OpenID Core §5.4)


async def test_oidcc_scope_email(suite: Suite) -> None:
    """The email claims come from the userinfo endpoint for the code flow (OpenID Core §5.4)."""
    tokens, _ = await suite.code_flow(scope="openid email")
    info = (await suite.userinfo(tokens.access_token)).json()
    assert info["email"] == suite.email
    assert info["email_verified"] is True


async def test_oidcc_scope_address(suite: Suite) -> None:
    """Bastion holds no postal address: the scope is not offered, and asking for it is invalid_scope."""
    assert "address" not in suite.config["scopes_supported"]
    request = suite.request(scope="openid address")
    flow = await suite.authorize(request, suite.person())
    assert suite.error(flow, request)["error"] == "invalid_scope"


async def test_oidcc_scope_phone(suite: Suite) -> None:
    """Bastion holds no phone number: the scope is not offered, and asking for it is invalid_scope."""
    assert "phone" not in suite.config["scopes_supported"]
    request = suite.request(scope="openid phone")
    flow = await suite.authorize(request, suite.person())
    assert suite.error(flow, request)["error"] == "invalid_scope"


async def test_oidcc_scope_all(suite: Suite) -> None:
    """Every OpenID scope Bastion offers at once (address and phone are not offered)."""
    offered = [s for s in ("openid", "profile", "email", "address", "phone") if s in suite.config["scopes_supported"]]
    tokens, _ = await suite.code_flow(scope=" ".join(offered))
    info = (await suite.userinfo(tokens.access_token)).json()
    assert info["email"] == suite.email


async def test_oidcc_alternate_happy_flow(suite: Suite) -> None:
    """Scope order reversed and the query parameters in another order (RFC 6749 §3.3)."""
    request = suite.request(scope="email openid")
    request.params = dict(reversed(list(request.params.items())))
    flow = await suite.authorize(request, suite.person())
    tokens = await suite.tokens(await suite.exchange(suite.code(flow, request), request), request)
    assert (await suite.userinfo(tokens.access_token)).json()["email"] == suite.email


async def test_oidcc_display_page(suite: Suite) -> None:
    """display=page must not cause an error (OpenID Core §3.1.2.1): the normal sign-in page."""
    tokens, flow = await suite.code_flow(display="page")
    assert flow.seen[0] == "sign-in"
    assert tokens.id_claims["sub"]


async def test_oidcc_display_popup(suite: Suite) -> None:
    """display=popup must not cause an error: the same sign-in page (Bastion has one layout)."""
    tokens, flow = await suite.code_flow(display="popup")
    assert flow.seen[0] == "sign-in"
    assert tokens.id_claims["sub"]


# --- prompt, max_age and hints (OpenID Core §3.1.2.1) ------------------------


async def test_oidcc_prompt_login(suite: Suite) -> None:
    """prompt=login: the person signs in again, and auth_time moves on."""
    first, _ = await suite.code_flow()
    suite.harness.clock.advance(seconds=5)
    second, flow = await suite.code_flow(prompt="login")
    assert "sign-in" in flow.seen  # ExpectSecondLoginPage
    assert second.id_claims["sub"] == first.id_claims["sub"]
    assert second.id_claims["auth_time"] > first.id_claims["auth_time"]


async def test_oidcc_prompt_none_not_logged_in(suite: Suite) -> None:
    """prompt=none with no session: an error needing a user interface, never a page."""
    request = suite.request(prompt="none")
    flow = await suite.authorize(request, None)
    assert flow.seen == []
    assert suite.error(flow, request)["error"] in ERRORS_NEEDING_A_USER


async def test_oidcc_prompt_none_logged_in(suite: Suite) -> None:
    """prompt=none after a sign-in: a code without any page; the same sub and auth_time."""
    first, _ = await suite.code_flow()
    second, flow = await suite.code_flow(None, prompt="none")
    assert flow.seen == []
    assert second.id_claims["sub"] == first.id_claims["sub"]
    assert second.id_claims["auth_time"] == first.id_claims["auth_time"]


async def test_oidcc_max_age_1(suite: Suite) -> None:
    """max_age=1 a second later: sign in again; auth_time present and later."""
    first, _ = await suite.code_flow()
    suite.harness.clock.advance(seconds=2)
    second, flow = await suite.code_flow(max_age="1")
    assert "sign-in" in flow.seen  # ExpectSecondLoginPage
    assert "auth_time" in second.id_claims  # CheckIdTokenAuthTimeClaimPresentDueToMaxAge
    assert second.id_claims["auth_time"] > first.id_claims["auth_time"]
    assert suite.now() - second.id_claims["auth_time"] <= 1  # CheckIdTokenAuthTimeIsRecentIfPresent


async def test_oidcc_max_age_10000(suite: Suite) -> None:
    """max_age=15000 then max_age=10000: no second sign-in, auth_time the same."""
    first, _ = await suite.code_flow(max_age="15000")
    assert "auth_time" in first.id_claims
    suite.harness.clock.advance(seconds=5)
    second, flow = await suite.code_flow(None, max_age="10000")
    assert "sign-in" not in flow.seen
    assert second.id_claims["auth_time"] == first.id_claims["auth_time"]
    assert second.id_claims["sub"] == first.id_claims["sub"]


async def test_oidcc_ensure_request_with_unknown_parameter_succeeds(suite: Suite) -> None:
    """RFC 6749 §3.1: unrecognized parameters are ignored."""
    tokens, _ = await suite.code_flow(extra="foobar")
    assert tokens.id_claims["sub"]


async def test_oidcc_id_token_hint(suite: Suite) -> None:
    """prompt=none with the first ID token as id_token_hint: a code at once, the same sub."""
    first, _ = await suite.code_flow()
    second, flow = await suite.code_flow(None, prompt="none", id_token_hint=first.response["id_token"])
    assert flow.seen == []
    assert second.id_claims["sub"] == first.id_claims["sub"]
    assert second.id_claims["auth_time"] == first.id_claims["auth_time"]


async def test_oidcc_login_hint(suite: Suite) -> None:
    """login_hint must at a minimum not cause an error (a fresh sign-in page)."""
    async with suite.fresh_browser() as browser:
        tokens, flow = await suite.code_flow(browser=browser, login_hint=suite.email)
    assert flow.seen[0] == "sign-in"
    assert tokens.id_claims["sub"]


async def test_oidcc_ui_locales(suite: Suite) -> None:
    """ui_locales=se must not cause an error (OpenID Core §3.1.2.1)."""
    tokens, _ = await suite.code_flow(ui_locales="se")
    assert tokens.id_claims["sub"]


async def test_oidcc_claims_locales(suite: Suite) -> None:
    """claims_locales=se must not cause an error (OpenID Core §5.2)."""
    tokens, _ = await suite.code_flow(claims_locales="se")
    assert tokens.id_claims["sub"]


async def test_oidcc_ensure_request_with_acr_values_succeeds(suite: Suite) -> None:
    """acr_values from discovery's acr_values_supported: the authorization succeeds with one of them.

    The suite only warns when the ID token's acr is none of the requested
    values; Bastion lists its two (a password; a password and a second
    factor) and asking for both signs a TOTP user in with both factors.
    """
    offered = suite.config["acr_values_supported"]
    assert offered
    secret, _ = await suite.harness.with_totp("acr-user@example.com")
    suite.email = "acr-user@example.com"
    harness = suite.harness
    tokens, flow = await suite.code_flow(suite.person(totp=lambda: harness.totp(secret)), acr_values=" ".join(offered))
    assert "second-factor" in flow.seen
    assert tokens.id_claims["acr"] in offered
    assert "otp" in tokens.id_claims["amr"]


# --- codes (RFC 6749 §4.1.2) -------------------------------------------------


async def test_oidcc_codereuse(suite: Suite) -> None:
    """OP-OAuth-2nd: a code used a second time is invalid_grant."""
    request = suite.request()
    code = suite.code(await suite.authorize(request, suite.person()), request)
    await suite.tokens(await suite.exchange(code, request), request)
    again = await suite.exchange(code, request)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


async def test_oidcc_codereuse_30seconds(suite: Suite) -> None:
    """OP-OAuth-2nd-30s and -Revokes: reused 30 s later, invalid_grant, and the first access token dies."""
    request = suite.request()
    code = suite.code(await suite.authorize(request, suite.person()), request)
    first = await suite.tokens(await suite.exchange(code, request), request)
    assert (await suite.userinfo(first.access_token)).status_code == 200
    suite.harness.clock.advance(seconds=30)
    again = await suite.exchange(code, request)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert (await suite.userinfo(first.access_token)).status_code == 401  # CallProtectedResource fails


async def test_oidcc_ensure_registered_redirect_uri(suite: Suite) -> None:
    """An unregistered redirect URI (the registered one plus a random path): an error page, never a redirect."""
    request = suite.request(redirect_uri=REDIRECT_URI + "/h4ck3rP4th")
    flow = await suite.authorize(request, suite.person())
    assert flow.callback is None  # ExpectRedirectUriErrorPage
    assert flow.last.status_code == 400
    assert "text/html" in flow.last.headers["content-type"]


async def test_oidcc_ensure_post_request_succeeds(suite: Suite) -> None:
    """The authorization request as a form POST (OpenID Core §3.1.2.1)."""
    request = suite.request()
    flow = await suite.authorize(request, suite.person(), method="POST")
    tokens = await suite.tokens(await suite.exchange(suite.code(flow, request), request), request)
    assert tokens.id_claims["sub"]


async def test_oidcc_server_client_secret_post(suite: Suite) -> None:
    """OP-ClientAuth-SecretPost: the happy flow with client_secret_post."""
    client, secret = await suite.new_client(token_endpoint_auth_method="client_secret_post")
    assert client.token_endpoint_auth_method == "client_secret_post"
    tokens, _ = await suite.code_flow(client=client, secret=secret)
    assert tokens.id_claims["aud"] in (client.id, [client.id])
    # The same client authenticating with Basic instead: not its registered method.
    request = suite.request(client)
    code = suite.code(await suite.authorize(request, suite.person()), request)
    basic = await suite.harness.client.post(
        suite.path("token_endpoint"),
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
              "code_verifier": request.verifier},
        auth=(client.id, secret),
    )  # fmt: skip
    assert basic.status_code == 401
    assert basic.json()["error"] == "invalid_client"


# --- request objects: not supported, refused as the spec allows -------------


async def test_oidcc_request_uri_unsigned_supported_correctly_or_rejected_as_unsupported(suite: Suite) -> None:
    """A request_uri pointing at a JWT elsewhere: request_uri_not_supported (only PAR's own URIs are taken)."""
    assert suite.config.get("request_uri_parameter_supported") is False
    assert "none" not in suite.config.get("request_object_signing_alg_values_supported", [])
    request = suite.request(request_uri="https://rp.example.org/request.jwt")
    flow = await suite.authorize(request, suite.person())
    if flow.callback is None:
        assert flow.last.status_code == 400
    else:
        assert suite.error(flow, request)["error"] in ("request_uri_not_supported", "invalid_request_uri")


async def test_oidcc_unsigned_request_object_supported_correctly_or_rejected_as_unsupported(suite: Suite) -> None:
    """An unsigned request object by value: request_not_supported (OpenID Core §3.1.2.6)."""
    assert suite.config.get("request_parameter_supported") is False
    request = suite.request()
    request.params["request"] = unsigned_jwt({**request.params, "aud": suite.issuer, "iss": suite.client.id})
    flow = await suite.authorize(request, suite.person())
    assert suite.error(flow, request)["error"] == "request_not_supported"


async def test_oidcc_ensure_request_object_with_redirect_uri(suite: Suite) -> None:
    """A request object naming another redirect_uri: refused, and never a redirect to the object's URI."""
    request = suite.request()
    inner = {**request.params, "redirect_uri": "https://attacker.example/cb", "aud": suite.issuer}
    request.params["request"] = unsigned_jwt(inner)
    flow = await suite.authorize(request, suite.person())
    assert flow.callback is None or not flow.callback.startswith("https://attacker.example")
    if flow.callback is not None:
        assert suite.error(flow, request)["error"] == "request_not_supported"


async def test_oidcc_claims_essential(suite: Suite) -> None:
    """The claims parameter (name, essential, in userinfo): the authorization still succeeds."""
    claims = json.dumps({"userinfo": {"name": {"essential": True}}})
    tokens, _ = await suite.code_flow(scope="openid profile", claims=claims)
    info = await suite.userinfo(tokens.access_token)
    assert info.status_code == 200
    assert "name" not in tokens.id_claims  # EnsureIdTokenDoesNotContainName (asked for in userinfo only)


# --- refresh tokens and PKCE -------------------------------------------------


async def test_oidcc_refresh_token(suite: Suite) -> None:
    """Refresh works, the new ID token matches the first, and the token is bound to its client."""
    assert "refresh_token" in suite.config["grant_types_supported"]  # EnsureServerConfigurationSupportsRefreshToken
    assert "offline_access" in suite.config["scopes_supported"]
    first, _ = await suite.code_flow(scope="openid offline_access", prompt="consent")
    refresh = first.response["refresh_token"]
    # EnsureRefreshTokenContainsAllowedCharactersOnly (RFC 6749 Appendix A.17: VSCHAR).
    assert all(0x20 <= ord(ch) <= 0x7E for ch in refresh)
    # Another client presenting it: invalid_grant, and it still works for its own client.
    other, other_secret = await suite.new_client()
    stolen = await suite.token(
        {"grant_type": "refresh_token", "refresh_token": refresh}, client=other, secret=other_secret
    )
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"
    refreshed = await suite.token({"grant_type": "refresh_token", "refresh_token": refresh})
    assert refreshed.status_code == 200, refreshed.text
    body = refreshed.json()
    assert body["access_token"]
    if "id_token" in body:  # OpenID Core §12.2: the same iss, sub, aud; no nonce required
        claims = b64json(body["id_token"].split(".")[1])
        assert claims["iss"] == first.id_claims["iss"]
        assert claims["sub"] == first.id_claims["sub"]
        assert claims["aud"] == first.id_claims["aud"]
    assert (await suite.userinfo(body["access_token"])).json()["sub"] == first.id_claims["sub"]


async def test_oidcc_ensure_request_with_valid_pkce_succeeds(suite: Suite) -> None:
    """Valid PKCE succeeds; and since Bastion requires it (RFC 9700 §2.1.1), none or plain is refused."""
    tokens, _ = await suite.code_flow()
    assert tokens.id_claims["sub"]
    for missing in ({"code_challenge": None, "code_challenge_method": None}, {"code_challenge_method": "plain"}):
        request = suite.request(**missing)
        flow = await suite.authorize(request, suite.person())
        assert suite.error(flow, request)["error"] == "invalid_request"
