"""`bastion keys rotate signing` and `bastion keys revoke signing KID` beside a
serving app (issue #13 §4): a rotation breaks no session, a revocation ends
every access token the key signed within the server's key check, and the CLI
explains a wrong purpose or kid in one line."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from bastion.audit import EventTag
from bastion.audit.models import AuditEvent
from harness import Harness

runner = CliRunner()
ALICE = "alice@example.com"


async def bastion(harness: Harness, *args: str) -> tuple[int, str, str]:
    """The command, run beside the serving app (in a thread: it has its own event loop)."""
    result = await asyncio.to_thread(runner.invoke, cli(), [*args, "--data-dir", str(harness.settings.data_dir)])
    return result.exit_code, result.stdout, result.stderr


def cli() -> object:
    from bastion.cli import app

    return app


def kid_of(token: str) -> str:
    return str(json.loads(base64.urlsafe_b64decode(token.split(".", maxsplit=1)[0] + "=="))["kid"])


@pytest.fixture(autouse=True)
def _cli_database(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI reads bastion.toml; point it at the test's database too.
    monkeypatch.setenv("BASTION_DATABASE_URL", harness.settings.sqlalchemy_url)


async def _me(harness: Harness, access_token: str) -> int:
    response = await harness.client.get("/api/v1/me", headers={"authorization": f"Bearer {access_token}"})
    return response.status_code


async def test_v9_1_1_a_revoked_signing_key_ends_its_tokens_on_a_running_server(harness: Harness) -> None:
    """ASVS V9.1.1, V13.3.4: the key that signed Alice's access token leaks; `bastion
    keys revoke signing KID` (another process) makes the running server refuse that
    token, which it had already verified and remembered, within its key check; a
    new key signs the next sign-in, which works; the event is audited."""
    tokens = await harness.signed_in(ALICE)
    leaked = kid_of(tokens["access_token"])
    assert await _me(harness, tokens["access_token"]) == 200

    code, out, err = await bastion(harness, "keys", "revoke", "signing", leaked)
    assert code == 0, err
    assert f"revoked signing key {leaked}" in out
    assert "new active signing key" in out

    status = 200
    for _ in range(100):  # the server looks at the keyring files every key_check_seconds (1 s)
        status = await _me(harness, tokens["access_token"])
        if status == 401:
            break
        await asyncio.sleep(0.05)
    assert status == 401
    fresh = await harness.login(ALICE)
    assert kid_of(fresh["access_token"]) != leaked
    assert await _me(harness, fresh["access_token"]) == 200
    tags = [row.tag for row in await harness.app.state.db.all(sa.select(AuditEvent.tag))]
    assert tags.count(EventTag.KEY_REVOKE) == 1


async def test_v13_3_4_rotating_signing_keys_breaks_no_session(harness: Harness) -> None:
    """ASVS V13.3.4: after `bastion keys rotate signing` every token signed before it
    still works, and the old key is still in the keyring the JWKS is built from."""
    tokens = await harness.signed_in(ALICE)
    code, out, err = await bastion(harness, "keys", "rotate", "signing")
    assert code == 0, err
    assert out.count("new active") == 3
    await asyncio.sleep(0)
    assert await _me(harness, tokens["access_token"]) == 200
    published = {key["kid"] for key in harness.app.state.sessions.signer.public_jwks()["keys"]}
    assert kid_of(tokens["access_token"]) in published


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("keys", "revoke", "signing", "no-such-kid"), "no signing key no-such-kid"),
        (("keys", "revoke", "encryption", "whatever"), "only signing and notary keys are revoked"),
        (("keys", "revoke", "hmac", "whatever"), "only signing and notary keys are revoked"),
    ],
    ids=["unknown-kid", "encryption", "hmac"],
)
async def test_revoke_explains_a_wrong_purpose_or_kid_in_one_line(
    harness: Harness, args: tuple[str, ...], message: str
) -> None:
    before = [info.kid for info in harness.app.state.keys.signing.kids()]
    code, _, err = await bastion(harness, *args)
    assert code == 2
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    assert message in err
    assert [info.kid for info in harness.app.state.keys.signing.kids()] == before


async def test_revoking_twice_is_one_line_and_changes_nothing(harness: Harness) -> None:
    kid = harness.app.state.keys.signing_rs256.active_kid
    code, _, err = await bastion(harness, "keys", "revoke", "signing", kid)
    assert code == 0, err
    code, _, err = await bastion(harness, "keys", "revoke", "signing", kid)
    assert code == 2
    assert "already revoked" in err
    code, out, _ = await bastion(harness, "keys", "list")
    assert code == 0
    assert "revoked" in out
