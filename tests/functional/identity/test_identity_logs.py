"""The planted-secret test: run every auth flow with known secrets and check
that none of them reaches any log line (V16.2.5, V7.2.x, V9.x)."""

from __future__ import annotations

import io

import pytest

from bastion.logging import LogFormat, configure_logging
from bastion.security import totp_at
from harness import NEW_PASSWORD, PASSWORD, Harness

ALICE = "alice@example.com"


@pytest.mark.parametrize("log_format", ["json", "console"])
async def test_no_secret_reaches_the_log(harness: Harness, log_format: LogFormat) -> None:
    """V16.2.5: passwords, tokens, TOTP codes and API keys stay out of the log, in both formats."""
    captured = io.StringIO()
    configure_logging("debug", log_format=log_format, stream=captured)
    try:
        planted: list[str] = [PASSWORD, NEW_PASSWORD]
        await harness.register(ALICE)
        tokens = await harness.login(ALICE)
        planted += [tokens["access_token"], tokens["refresh_token"]]

        enrol = (await harness.client.post("/api/v1/me/mfa/totp", headers=harness.bearer(tokens))).json()
        step = int(harness.clock.now().timestamp()) // 30
        code = totp_at(enrol["secret"], step)
        confirm = await harness.client.post(
            "/api/v1/me/mfa/totp/confirm", json={"code": code}, headers=harness.bearer(tokens)
        )
        recovery = confirm.json()["recovery_codes"]
        planted += [enrol["secret"], code, *recovery]

        challenge = await harness.login(ALICE)
        planted.append(challenge["mfa_token"])
        harness.clock.advance(seconds=30)
        second = totp_at(enrol["secret"], step + 1)
        planted.append(second)
        done = (
            await harness.client.post("/api/v1/auth/mfa", json={"mfa_token": challenge["mfa_token"], "code": second})
        ).json()
        planted += [done["access_token"], done["refresh_token"]]
        rotated = (
            await harness.client.post("/api/v1/auth/refresh", json={"refresh_token": done["refresh_token"]})
        ).json()
        planted += [rotated["access_token"], rotated["refresh_token"]]
        key = await harness.client.post(
            "/api/v1/me/api-keys",
            json={"name": "ci", "scopes": ["records:notes:read"]},
            headers=harness.bearer(rotated),
        )
        assert key.status_code == 201, key.text
        planted.append(key.json()["key"])
        await harness.client.get("/api/v1/me", headers={"authorization": f"Bearer {key.json()['key']}"})
        await harness.client.get("/api/v1/me", headers={"x-api-key": key.json()["key"]})
        # Replaying a refresh token is logged as an attack, still without the token.
        await harness.client.post("/api/v1/auth/refresh", json={"refresh_token": done["refresh_token"]})

        await harness.client.post("/api/v1/auth/password/forgot", json={"email": ALICE})
        reset = await harness.token_from_last_mail(ALICE)
        planted.append(reset)
        await harness.client.post("/api/v1/auth/password/reset", json={"token": reset, "new_password": NEW_PASSWORD})
        # Secrets in places they should never be: a header and a bad body.
        await harness.client.get("/api/v1/me", headers={"authorization": f"Bearer {tokens['refresh_token']}"})
        await harness.client.post("/api/v1/auth/login", json={"email": ALICE, "password": PASSWORD, "x": 1})
        await harness.app.state.postman.drain()
    finally:
        configure_logging("info")

    log = captured.getvalue()
    assert "auth:refresh:reuse_detected" in log  # the log did see the flows
    for secret in planted:
        assert secret not in log, f"a planted secret of length {len(secret)} reached the log"
