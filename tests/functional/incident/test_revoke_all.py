"""``bastion incident revoke-all`` and ``incident lockdown`` from the command line, against a running app on the
same database: a credential that worked a moment before is refused at its next request."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from bastion.audit.models import AuditEvent
from bastion.cli import app as cli
from factories.access import create_api_key
from factories.oauth import REDIRECT_URI, VERIFIER, basic, create_client, create_code
from harness import PASSWORD, Harness

pytestmark = pytest.mark.clock_now  # the command line dates its audit events by the real clock
runner = CliRunner()


@pytest.fixture(autouse=True)
def _same_database(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line reads bastion.toml; the test's PostgreSQL database comes as an override."""
    if harness.settings.database_url is not None:
        monkeypatch.setenv("BASTION_DATABASE_URL", harness.settings.database_url.get_secret_value())


async def bastion(harness: Harness, *args: str) -> tuple[int, str, str]:
    """The CLI in a thread (it runs its own event loop), on the harness's data directory."""
    result = await asyncio.to_thread(
        runner.invoke, cli, ["incident", *args, "--data-dir", str(harness.settings.data_dir)]
    )
    return result.exit_code, result.stdout, result.stderr


async def credentials(harness: Harness) -> dict[str, str]:
    """A session, an API key and an OAuth access token of Alice's, each working."""
    user = await harness.user("alice@example.com")
    session = await harness.sign_in(user)
    key = await create_api_key(harness.app, user, scopes=("records:*", "me:read"))
    client_id, secret = await create_client(harness.app)
    code = await create_code(harness.app, client_id, user.id, scopes=("openid", "me:read", "offline_access"))
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": VERIFIER}
    oauth = (await harness.client.post("/oauth2/token", data=form, headers=basic(client_id, secret))).json()
    found = {
        "session": session["access_token"],
        "refresh": session["refresh_token"],
        "api_key": key,
        "oauth": oauth["access_token"],
        "oauth_refresh": oauth["refresh_token"],
        "client_id": client_id,
        "client_secret": str(secret),
    }
    for name in ("session", "api_key", "oauth"):
        response = await harness.client.get("/api/v1/me", headers=harness.bearer(found[name]))
        assert response.status_code == 200, (name, response.text)
    return found


async def test_revoke_all_then_lockdown_refuses_every_credential_at_its_next_request(harness: Harness) -> None:
    """V7.4.5 / V10.4.9: every chosen credential stops at its next use; then lockdown refuses sign-ins."""
    creds = await credentials(harness)
    code, out, err = await bastion(harness, "revoke-all", "--sessions", "--api-keys", "--oauth")
    assert code == 0, err
    assert "sessions: 1 revoked" in out
    assert "api_keys: 1 revoked" in out
    assert "oauth_grants: 1 revoked" in out
    for name in ("session", "api_key", "oauth"):
        response = await harness.client.get("/api/v1/me", headers=harness.bearer(creds[name]))
        assert response.status_code == 401, name
    refreshed = await harness.client.post("/api/v1/auth/refresh", json={"refresh_token": creds["refresh"]})
    assert refreshed.status_code == 401
    oauth_refresh = await harness.client.post(
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": creds["oauth_refresh"]},
        headers=basic(creds["client_id"], creds["client_secret"]),
    )
    assert oauth_refresh.status_code == 400
    [event] = await harness.app.state.db.all(select(AuditEvent).where(AuditEvent.tag == "incident:revoke_all"))
    assert event.details == {"sessions": 1, "api_keys": 1, "oauth_grants": 1, "oauth_codes": 0}

    # Lockdown from the command line: another process; the app sees it within state_refresh.
    code, _, err = await bastion(harness, "lockdown", "on", "--reason", "credential stuffing")
    assert code == 0, err
    started = time.monotonic()
    while True:
        login = await harness.client.post(
            "/api/v1/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
        )
        if login.status_code == 503:
            break
        assert time.monotonic() - started < 5, login.text
        await asyncio.sleep(0.05)
    assert time.monotonic() - started < 1.0
    assert login.json()["type"].endswith("/lockdown")
    code, out, _ = await bastion(harness, "lockdown", "status")
    assert code == 0
    assert "lockdown on" in out
    assert "credential stuffing" in out
    [on] = await harness.app.state.db.all(select(AuditEvent).where(AuditEvent.tag == "incident:lockdown:on"))
    assert on.details["reason"] == "credential stuffing"
    code, out, _ = await bastion(harness, "lockdown", "off")
    assert code == 0
    assert "lockdown off" in out


async def test_only_the_chosen_kinds_are_revoked(harness: Harness) -> None:
    creds = await credentials(harness)
    code, out, err = await bastion(harness, "revoke-all", "--api-keys")
    assert code == 0, err
    assert out.strip() == "api_keys: 1 revoked"
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(creds["api_key"]))).status_code == 401
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(creds["session"]))).status_code == 200
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(creds["oauth"]))).status_code == 200


async def test_a_pending_code_cannot_become_a_grant_after_revoke_all(harness: Harness) -> None:
    user = await harness.user("alice@example.com")
    client_id, secret = await create_client(harness.app)
    code = await create_code(harness.app, client_id, user.id)
    assert (await bastion(harness, "revoke-all", "--oauth"))[0] == 0
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": VERIFIER}
    response = await harness.client.post("/oauth2/token", data=form, headers=basic(client_id, secret))
    assert response.status_code == 400


async def test_bad_invocations_fail_in_one_line_and_change_nothing(harness: Harness) -> None:
    creds = await credentials(harness)
    for args, message in [
        (("revoke-all",), "choose at least one"),
        (("lockdown", "on"), "needs --reason"),
        (("lockdown", "on", "--reason", "   "), "needs --reason"),
        (("lockdown", "maybe"), "on, off or status"),
        (("lockdown", "on", "--reason", "x" * 513), "at most 512"),
    ]:
        code, _, err = await bastion(harness, *args)
        assert code == 2, args
        assert message in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
    assert not (await harness.app.state.lockdown.current()).on
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(creds["session"]))).status_code == 200


async def test_revoke_all_racing_requests_leaves_nothing_alive(harness: Harness) -> None:
    """Concurrency: requests racing the revocation never outlive it (each is refused once it has committed)."""
    creds = await credentials(harness)

    async def hammer() -> list[int]:
        return [
            (await harness.client.get("/api/v1/me", headers=harness.bearer(creds["session"]))).status_code
            for _ in range(20)
        ]

    revoked, *seen = await asyncio.gather(bastion(harness, "revoke-all", "--sessions"), *(hammer() for _ in range(3)))
    assert revoked[0] == 0, revoked
    assert {status for statuses in seen for status in statuses} <= {200, 401}
    responses = await asyncio.gather(
        *(harness.client.get("/api/v1/me", headers=harness.bearer(creds["session"])) for _ in range(8))
    )
    assert {response.status_code for response in responses} == {401}
