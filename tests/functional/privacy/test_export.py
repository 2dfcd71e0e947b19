"""The export (GDPR art. 15 and 20): ``GET /api/v1/me/export``, the admin
API's export and ``bastion user export`` hand back everything Bastion holds
about a user, never a secret, never another user's data; only a session
signed in within ``[privacy] export_max_auth_age``, never an API key or an
OAuth token; and docs/privacy.md's example is a real export's shape.
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from typer.testing import CliRunner

from bastion.access.models import ApiKey
from bastion.audit.models import AuditEvent
from bastion.cli import app as cli
from bastion.db import transaction
from bastion.identity.models import Account, RecoveryCode, User
from bastion.monitor.models import KnownDevice
from bastion.oauth.models import LinkedIdentity, OAuthClient, OAuthConsent, OAuthRefreshToken
from bastion.sessions.models import RefreshToken
from factories.access import create_api_key
from factories.data import COLLECTIONS, create_record
from factories.identity import PASSWORD, create_user, enable_totp, sign_in
from factories.oauth import REDIRECT_URI, VERIFIER, basic, create_client, create_code
from harness import Harness

EXPORT = "/api/v1/me/export"
DOC = Path(__file__).parents[3] / "docs" / "privacy.md"
PLANTED = "planted-ssn-4711"
FINGERPRINT = "k1:planted-device-fingerprint"


@dataclass
class Alice:
    """A user with something in every section, and every secret Bastion holds for her."""

    user: Account
    tokens: dict[str, Any]
    secrets: list[str]


async def _oauth_tokens(harness: Harness, user: Account) -> tuple[dict[str, Any], str]:
    """An OAuth client's tokens for ``user`` (a grant and its refresh token), and the client's secret."""
    client_id, secret = await create_client(harness.app)
    code = await create_code(harness.app, client_id, user.id, scopes=("openid", "me:read", "offline_access"))
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": VERIFIER}
    response = await harness.client.post("/oauth2/token", data=form, headers=basic(client_id, secret))
    assert response.status_code == 200, response.text
    assert secret is not None
    return dict(response.json()), secret


async def _alice(harness: Harness) -> Alice:
    app, db = harness.app, harness.app.state.db
    user = await harness.user("alice@example.com")
    totp = await enable_totp(app, user)
    user = dataclasses.replace(user, totp_enabled=True)
    harness.clock.advance(seconds=30)
    key = await create_api_key(app, user, scopes=("records:*", "me:read"))
    await create_record(app, user, "things", {"name": "mine", "ssn": PLANTED})
    await create_record(app, user, "notes", {"title": "a note", "secret": PLANTED + "-note"})
    oauth, client_secret = await _oauth_tokens(harness, user)
    async with transaction(db) as tx:
        client_id = (await tx.one(sa.select(OAuthClient.id))).id
        await tx.execute(
            sa.insert(OAuthConsent).values(
                user_id=user.id, client_id=client_id, scopes=["openid", "me:read"], created_at=harness.clock.now()
            )
        )
        await tx.execute(
            sa.insert(LinkedIdentity).values(
                id=uuid.uuid4(),
                user_id=user.id,
                provider="example",
                issuer="https://id.example",
                subject="alice-at-example",
                email="alice@id.example",
                created_at=harness.clock.now(),
            )
        )
        await tx.execute(
            sa.insert(KnownDevice).values(
                user_id=user.id, fingerprint=FINGERPRINT, first_seen=harness.clock.now(), last_seen=harness.clock.now()
            )
        )
    tokens = await harness.sign_in(user, mfa=True)
    stored = await db.one(sa.select(User.password_hash, User.totp_secret).where(User.id == user.id))
    hashes = [row.token_hash for row in await db.all(sa.select(RefreshToken.token_hash))]
    hashes += [row.token_hash for row in await db.all(sa.select(OAuthRefreshToken.token_hash))]
    hashes += [row.secret_hash for row in await db.all(sa.select(ApiKey.secret_hash))]
    hashes += [row.code_hash for row in await db.all(sa.select(RecoveryCode.code_hash))]
    hashes += [row.secret_hash for row in await db.all(sa.select(OAuthClient.secret_hash)) if row.secret_hash]
    secrets = [
        PASSWORD,
        stored.password_hash,
        totp,
        stored.totp_secret.hex(),
        key,
        key.split("_", 2)[2],
        tokens["access_token"],
        tokens["refresh_token"],
        oauth["access_token"],
        oauth["refresh_token"],
        client_secret,
        FINGERPRINT,
        *hashes,
    ]
    return Alice(user=user, tokens=tokens, secrets=secrets)


def _planted_secret_free(body: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret
        assert secret not in body, f"a secret is in the export: {secret[:12]}…"


async def test_the_export_holds_everything_about_the_user_and_no_secret(harness: Harness) -> None:
    """V14.2.6 / V14.3.2: a user gets their data back in full, encrypted fields decrypted, never
    cached (no-store), and no credential of theirs (password, its hash, TOTP secret, recovery
    codes, refresh tokens, API key or client secrets, or any of their hashes) is ever in it;
    another user's data is not either."""
    alice = await _alice(harness)
    bob = await harness.user("bob@example.com")
    await create_record(harness.app, bob, "things", {"name": "bob's", "ssn": "bobs-own-ssn"})

    response = await harness.client.get(EXPORT, headers=harness.bearer(alice.tokens))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"] == f'attachment; filename="bastion-export-{alice.user.id}.json"'
    assert response.headers["cache-control"] == "no-store"
    body = response.text
    _planted_secret_free(body, alice.secrets)
    assert "bobs-own-ssn" not in body
    assert str(bob.id) not in body

    doc = response.json()
    assert doc["format"] == "bastion-export/v1"
    assert doc["user"]["id"] == str(alice.user.id)
    assert doc["user"]["email"] == "alice@example.com"
    assert doc["user"]["has_password"] is True
    assert doc["roles"] == ["user"]
    assert doc["mfa"] == {"totp_enabled": True, "recovery_codes_left": 10}
    assert len(doc["sessions"]) == 1
    assert doc["sessions"][0]["mfa"] is True
    [key] = doc["api_keys"]
    assert sorted(key["scopes"]) == ["me:read", "records:*"]
    assert set(key) == {"id", "name", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at"}
    assert [i["subject"] for i in doc["linked_identities"]] == ["alice-at-example"]
    assert [c["scopes"] for c in doc["oauth"]["consents"]] == [["openid", "me:read"]]
    [grant] = doc["oauth"]["grants"]
    assert grant["client_name"] == "Test client"
    assert "me:read" in grant["scopes"]
    assert doc["oauth"]["clients_owned"] == []
    assert [set(device) for device in doc["known_devices"]] == [{"first_seen", "last_seen"}]
    assert [r["ssn"] for r in doc["records"]["things"]] == [PLANTED]
    assert [r["secret"] for r in doc["records"]["notes"]] == [PLANTED + "-note"]
    assert doc["records"]["board"] == []
    tags = {event["tag"] for event in doc["audit_events"]}
    assert {"admin:user:create", "auth:totp:enable", "auth:login", "data:record:create"} <= tags
    assert all(str(alice.user.id) in (e["actor_id"], e["subject_id"]) for e in doc["audit_events"])

    # The export is audited: the user asked, about themselves.
    event = await harness.app.state.db.one(
        sa.select(AuditEvent).where(AuditEvent.tag == "privacy:export").order_by(AuditEvent.id.desc())
    )
    assert (event.outcome, event.actor_id, event.subject_id, event.details) == (
        "success",
        alice.user.id,
        alice.user.id,
        {"via": "api"},
    )


async def test_a_sign_in_older_than_the_limit_must_sign_in_again(harness: Harness) -> None:
    """V7.5.3 (re-authentication before a sensitive operation): the export needs a sign-in at most
    five minutes old; an older session gets 403 saying to sign in again, and refreshing its tokens
    does not make the sign-in recent; V2.4.1: ten exports an hour per account."""
    await harness.register("carol@example.com")
    tokens = await harness.login("carol@example.com")
    harness.clock.advance(seconds=299)
    assert (await harness.client.get(EXPORT, headers=harness.bearer(tokens))).status_code == 200
    harness.clock.advance(seconds=2)
    stale = await harness.client.get(EXPORT, headers=harness.bearer(tokens))
    assert stale.status_code == 403
    assert stale.headers["content-type"] == "application/problem+json"
    assert "sign in again" in stale.json()["detail"]
    refreshed = await harness.client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200
    assert (await harness.client.get(EXPORT, headers=harness.bearer(refreshed.json()))).status_code == 403
    again = await harness.login("carol@example.com")
    assert (await harness.client.get(EXPORT, headers=harness.bearer(again))).status_code == 200
    # Ten an hour per account, then 429 (V2.4.1); two were made above.
    statuses = [(await harness.client.get(EXPORT, headers=harness.bearer(again))).status_code for _ in range(9)]
    assert statuses == [200] * 8 + [429]
    denied = await harness.app.state.db.all(
        sa.select(AuditEvent.details).where(AuditEvent.tag == "privacy:export", AuditEvent.outcome == "denied")
    )
    assert [row.details for row in denied] == [{"via": "api", "reason": "sign_in_too_old"}] * 2


async def test_api_keys_and_oauth_tokens_are_refused(harness: Harness) -> None:
    """V8.2.1: a credential delegated to a program (an API key, an OAuth client's token), even one
    whose scopes name ``me:read``, cannot take the whole account out; no credential at all is 401."""
    user = await harness.user("dave@example.com")
    key = await create_api_key(harness.app, user, scopes=("me:read",))
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(key))).status_code == 200
    refused = await harness.client.get(EXPORT, headers=harness.bearer(key))
    assert refused.status_code == 403
    assert "API keys and OAuth tokens cannot" in refused.json()["detail"]
    oauth, _ = await _oauth_tokens(harness, user)
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(oauth["access_token"]))).status_code == 200
    assert (await harness.client.get(EXPORT, headers=harness.bearer(oauth["access_token"]))).status_code == 403
    assert (await harness.client.get(EXPORT)).status_code == 401
    successes = await harness.app.state.db.value(
        sa.select(sa.func.count())
        .select_from(AuditEvent)
        .where(AuditEvent.tag == "privacy:export", AuditEvent.outcome == "success")
    )
    assert successes == 0


async def test_the_admin_export_is_the_same_document_and_the_documented_one(
    harness: Harness, admin_client: Any
) -> None:
    """V8.2.1: only an admin session with two factors exports another user; 404 for no such user;
    the public listener does not serve it. docs/privacy.md's example has exactly the keys of a
    real export, in every section."""
    alice = await _alice(harness)
    async with transaction(harness.app.state.db) as tx:  # a client she owns: that section has an item too
        await tx.execute(sa.update(OAuthClient).values(owner_id=alice.user.id))
    admin = await harness.admin()
    path = f"/admin/api/v1/users/{alice.user.id}/export"
    response = await admin_client.get(path, headers=harness.bearer(admin))
    assert response.status_code == 200, response.text
    _planted_secret_free(response.text, alice.secrets)
    own = (await harness.client.get(EXPORT, headers=harness.bearer(alice.tokens))).json()
    by_admin = response.json()
    assert _shape(by_admin) == _shape(own)
    assert by_admin["records"] == own["records"]
    _documented_like(own)
    assert (await admin_client.get(path, headers=harness.bearer(alice.tokens))).status_code == 403
    no_mfa = await harness.sign_in(await harness.user("root@example.com", roles=("admin",)))
    assert (await admin_client.get(path, headers=harness.bearer(no_mfa))).status_code == 403
    unknown = await admin_client.get(f"/admin/api/v1/users/{uuid.uuid4()}/export", headers=harness.bearer(admin))
    assert unknown.status_code == 404
    assert (await harness.client.get(path, headers=harness.bearer(admin))).status_code == 404
    event = await harness.app.state.db.one(
        sa.select(AuditEvent).where(AuditEvent.tag == "privacy:export").order_by(AuditEvent.id)
    )
    assert (event.subject_id, event.details["via"]) == (alice.user.id, "admin")
    assert event.details["client_cert"]["cn"] == "harness-admin"  # the admin plane's certificate, as every admin event
    assert event.actor_id not in (None, alice.user.id)


async def test_reading_users_is_not_enough_to_export_one(harness: Harness, admin_client: Any) -> None:
    """V8.2.1, V8.2.2: the admin export hands over every record decrypted, so it needs
    ``admin:users:export``; a two-factor session of a role with only ``admin:users:read``
    lists users but gets 403 for the export, and nothing is exported."""
    alice = await _alice(harness)
    admin = await harness.admin()
    role = {"permissions": ["admin:users:read"], "description": "support desk"}
    created = await admin_client.put("/admin/api/v1/roles/support", json=role, headers=harness.bearer(admin))
    assert created.status_code in (200, 201), created.text
    support = await create_user(harness.app, "desk@example.com", roles=("support",))
    await enable_totp(harness.app, support)
    desk = await sign_in(harness.app, dataclasses.replace(support, totp_enabled=True), mfa=True)
    assert (await admin_client.get("/admin/api/v1/users", headers=harness.bearer(desk))).status_code == 200
    refused = await admin_client.get(f"/admin/api/v1/users/{alice.user.id}/export", headers=harness.bearer(desk))
    assert refused.status_code == 403
    assert PLANTED not in refused.text
    exported = await harness.app.state.db.value(
        sa.select(sa.func.count())
        .select_from(AuditEvent)
        .where(AuditEvent.tag == "privacy:export", AuditEvent.outcome == "success")
    )
    assert exported == 0


async def test_the_cli_export_writes_a_private_file(harness: Harness, tmp_path: Path) -> None:
    """``bastion user export EMAIL --out FILE``: mode 0600, never over an existing file, one line for an
    unknown user."""
    alice = await _alice(harness)
    await harness.app.state.audit.stop()  # no sequencer writing to the file while the command does
    out = tmp_path / "alice.json"
    runner = CliRunner()
    data_dir = str(harness.settings.data_dir)
    url = harness.settings.database_url
    env = {"BASTION_DATABASE_URL": url.get_secret_value()} if url is not None else {}
    done = await asyncio.to_thread(
        runner.invoke, cli, ["user", "export", "alice@example.com", "--out", str(out), "--data-dir", data_dir], env=env
    )
    assert done.exit_code == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = out.read_text(encoding="utf-8")
    _planted_secret_free(text, alice.secrets)
    assert json.loads(text)["records"]["things"][0]["ssn"] == PLANTED
    again = await asyncio.to_thread(
        runner.invoke, cli, ["user", "export", "alice@example.com", "--out", str(out), "--data-dir", data_dir], env=env
    )
    assert again.exit_code == 2, (again.stdout, again.stderr)
    assert again.stderr.count("\n") == 1, again.stderr
    assert "already exists" in again.stderr
    assert out.read_text(encoding="utf-8") == text
    missing = tmp_path / "nobody.json"
    unknown = await asyncio.to_thread(
        runner.invoke,
        cli,
        ["user", "export", "nobody@example.com", "--out", str(missing), "--data-dir", data_dir],
        env=env,
    )
    assert unknown.exit_code == 2, (unknown.stdout, unknown.stderr)
    nowhere = await asyncio.to_thread(
        runner.invoke,
        cli,
        ["user", "export", "alice@example.com", "--out", str(tmp_path / "no" / "such.json"), "--data-dir", data_dir],
        env=env,
    )
    assert nowhere.exit_code == 2
    assert "is not a directory" in nowhere.stderr
    exports = await harness.app.state.db.value(
        sa.select(sa.func.count()).select_from(AuditEvent).where(AuditEvent.tag == "privacy:export")
    )
    assert exports == 1  # only the one file written: a refused command exports nothing
    assert "no user with email nobody@example.com" in unknown.stderr
    assert not missing.exists()


def _shape(value: Any) -> Any:
    """The keys of a document, recursively (a list by its first item's shape; an event's details are its tag's own)."""
    if isinstance(value, dict):
        return {key: None if key == "details" else _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return None


def _documented_like(real: dict[str, Any]) -> None:
    """docs/privacy.md's one example export has the keys of ``real``, in every section."""
    examples = re.findall(r"```json\n(\{\n  \"format\": \"bastion-export/v1\".*?)\n```", DOC.read_text(), re.S)
    assert len(examples) == 1, "docs/privacy.md must show one example export"
    documented, exported = _shape(json.loads(examples[0])), _shape(real)
    # The example's records show one collection; a record's shape is its collection's own.
    fields = {"id", "owner", "created_at", "updated_at", *COLLECTIONS["notes"]["fields"]}
    assert documented["records"]["notes"][0].keys() <= fields
    assert set(documented["records"]) <= set(exported["records"])
    documented["records"] = exported["records"] = None
    assert documented == exported
