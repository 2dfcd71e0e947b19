"""The planted-secret test for the token side of OAuth: client secrets,
codes, verifiers, every token, device codes, pushed request URIs and DPoP
proofs stay out of every log line, attacks included (V16.2.5)."""

from __future__ import annotations

import io

import pytest

from bastion.logging import LogFormat, configure_logging
from conftest import token_request
from factories.oauth import REDIRECT_URI, VERIFIER, DPoPKey, basic, create_client, create_code
from harness import Harness


@pytest.mark.parametrize("log_format", ["json", "console"])
async def test_no_oauth_secret_reaches_the_log(harness: Harness, log_format: LogFormat) -> None:
    captured = io.StringIO()
    configure_logging("debug", log_format=log_format, stream=captured)
    try:
        user = await harness.user("alice@example.com")
        client_id, secret = await create_client(harness.app)
        assert secret is not None
        code = await create_code(harness.app, client_id, user.id)
        planted = [secret, code, VERIFIER]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
        tokens = (await token_request(harness, client_id, secret, {**form, "code_verifier": VERIFIER})).json()
        planted += [tokens["access_token"], tokens["refresh_token"], tokens["id_token"]]
        await token_request(harness, client_id, secret, {**form, "code_verifier": VERIFIER})  # code reuse
        await harness.client.get("/oauth2/userinfo", headers=harness.bearer(tokens["access_token"]))

        code = await create_code(harness.app, client_id, user.id)
        planted.append(code)
        first = (
            await token_request(harness, client_id, secret, {**form, "code": code, "code_verifier": VERIFIER})
        ).json()
        rotated = (
            await token_request(
                harness, client_id, secret, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
            )
        ).json()
        planted += [first["access_token"], first["refresh_token"], rotated["access_token"], rotated["refresh_token"]]
        await token_request(
            harness, client_id, secret, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        )

        key = DPoPKey()
        proof = key.proof(
            "POST", harness.settings.auth.public_url + "/oauth2/token", now=int(harness.clock.now().timestamp())
        )
        planted.append(proof)
        bound = (
            await token_request(
                harness, client_id, secret, {"grant_type": "client_credentials"}, headers={"DPoP": proof}
            )
        ).json()
        planted.append(bound["access_token"])
        await token_request(
            harness, client_id, secret, {"grant_type": "client_credentials"}, headers={"DPoP": proof}
        )  # replay

        device = (
            await harness.client.post("/oauth2/device", data={"scope": "openid"}, headers=basic(client_id, secret))
        ).json()
        planted += [device["device_code"], device["user_code"], device["user_code"].replace("-", "")]
        par = await harness.client.post(
            "/oauth2/par",
            data={"response_type": "code", "redirect_uri": REDIRECT_URI},
            headers=basic(client_id, secret),
        )
        planted.append(par.json()["request_uri"])
        await harness.client.post(
            "/oauth2/introspect", data={"token": rotated["access_token"]}, headers=basic(client_id, secret)
        )
        await harness.client.post(
            "/oauth2/revoke", data={"token": rotated["refresh_token"]}, headers=basic(client_id, secret)
        )
        await token_request(harness, client_id, "wrong-" + secret, {"grant_type": "client_credentials"})
    finally:
        configure_logging("info")

    log = captured.getvalue()
    for tag in (
        "oauth:token",
        "oauth:token_revoke",
        "oauth:code_reuse_detected",
        "oauth:refresh_reuse_detected",
        "oauth:dpop_replay",
    ):
        assert tag in log  # the log did see the flows
    for planted_secret in planted:
        assert planted_secret not in log, f"a planted secret of length {len(planted_secret)} reached the log"
