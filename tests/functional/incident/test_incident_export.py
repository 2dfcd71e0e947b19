"""``bastion incident export``: the signed forensic bundle (audit bundle, alerts, blocks, posture,
configuration without secrets, a SHA-256 manifest signed by the notary key)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from typer.testing import CliRunner

from bastion.audit.models import AuditEvent
from bastion.cli import app as cli
from bastion.cli.incident import set_lockdown
from bastion.monitor.models import Alert
from bastion.network.models import Block
from bastion.security.notes import InvalidNote, verify_note
from factories import unit_of_work
from harness import Harness

pytestmark = pytest.mark.clock_now  # the command line dates its audit events by the real clock
runner = CliRunner()
SINCE = "2025-12-31T00:00:00Z"  # before the harness clock's 2026-01-01
SMTP_PASSWORD = "smtp-password-never-exported-7f3a"


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    return {"mail": {"smtp_password": SMTP_PASSWORD}}


@pytest.fixture(autouse=True)
def _same_database(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    if harness.settings.database_url is not None:
        monkeypatch.setenv("BASTION_DATABASE_URL", harness.settings.database_url.get_secret_value())
    monkeypatch.setenv("BASTION_MAIL__SMTP_PASSWORD", SMTP_PASSWORD)


async def bastion(harness: Harness, *args: str) -> tuple[int, str, str]:
    result = await asyncio.to_thread(runner.invoke, cli, [*args, "--data-dir", str(harness.settings.data_dir)])
    if result.exit_code == 1 and not result.stderr:  # an exception, not a one-line failure: show it
        return result.exit_code, result.stdout, repr(result.exception)
    return result.exit_code, result.stdout, result.stderr


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as archive:
        found = {}
        for member in archive.getmembers():
            handle = archive.extractfile(member)
            assert handle is not None
            found[member.name.removeprefix("incident/")] = handle.read()
        return found


async def incident_in_progress(harness: Harness) -> None:
    await harness.signed_in("alice@example.com")
    now = harness.clock.now()
    async with unit_of_work(harness.app) as uow:
        await set_lockdown(harness.app.state, uow, on=True, reason="stuffing from 203.0.113.0/24")
        await uow.db.execute(
            insert(Alert).values(
                rule="credential_stuffing",
                severity="high",
                group_key="global",
                status="open",
                first_seen=now,
                last_seen=now,
                count=20,
                details={},
            )
        )
        await uow.db.execute(
            insert(Block).values(
                network="203.0.113.7/32", reason="stuffing", source="auto", rule="x", created_at=now, expires_at=None
            )
        )


async def test_the_bundle_holds_every_part_and_its_signed_manifest_verifies(harness: Harness, tmp_path: Path) -> None:
    """V16.4.2: a forensic copy whose integrity can be checked off the box with the public key alone."""
    await incident_in_progress(harness)
    bundle = tmp_path / "incident.tar.gz"
    code, out, err = await bastion(harness, "incident", "export", "--since", SINCE, "--out", str(bundle))
    assert code == 0, err
    assert "wrote" in out
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    parts = members(bundle)
    assert set(parts) == {
        "audit.json",
        "alerts.json",
        "blocks.json",
        "posture.json",
        "config.json",
        "incident.json",
        "MANIFEST",
        "MANIFEST.sig",
    }
    # sha256sum -c MANIFEST
    lines = parts["MANIFEST"].decode().splitlines()
    assert len(lines) == 6
    for line in lines:
        hexdigest, name = line.split("  ")
        assert hashlib.sha256(parts[name]).hexdigest() == hexdigest, name
    # The signature, with only what `bastion keys export-public` publishes.
    code, published, err = await bastion(harness, "keys", "export-public")
    assert code == 0, err
    vkeys = [key["vkey"] for key in json.loads(published)["notary"]["keys"]]
    assert verify_note(parts["MANIFEST.sig"].decode(), vkeys) == parts["MANIFEST"].decode()
    # Contents.
    alerts = json.loads(parts["alerts.json"])
    assert [alert["rule"] for alert in alerts] == ["credential_stuffing"]
    assert [block["network"] for block in json.loads(parts["blocks.json"])] == ["203.0.113.7/32"]
    incident = json.loads(parts["incident.json"])
    assert incident["lockdown"]["on"] is True
    assert incident["lockdown"]["reason"] == "stuffing from 203.0.113.0/24"
    audit = json.loads(parts["audit.json"])
    assert "incident:lockdown:on" in {event["tag"] for event in audit["events"]}
    posture = json.loads(parts["posture.json"])
    assert "advisories" in {f["setting"] for f in posture}  # the whole report of `bastion check`, not its settings part
    # The audit part verifies offline, as `bastion audit verify --bundle` checks it.
    (tmp_path / "audit.json").write_bytes(parts["audit.json"])
    code, _, err = await bastion(harness, "audit", "verify", "--bundle", str(tmp_path / "audit.json"))
    assert code == 0, err
    # The export itself is audited.
    [event] = await harness.app.state.db.all(select(AuditEvent).where(AuditEvent.tag == "incident:export"))
    assert event.details["file"] == "incident.tar.gz"


async def test_no_secret_is_in_the_bundle(harness: Harness, tmp_path: Path) -> None:
    """The configuration is exported with every secret masked; no key material anywhere."""
    await incident_in_progress(harness)
    bundle = tmp_path / "incident.tar.gz"
    assert (await bastion(harness, "incident", "export", "--since", SINCE, "--out", str(bundle)))[0] == 0
    parts = members(bundle)
    config = json.loads(parts["config.json"])
    assert config["mail"]["smtp_password"] == "**********"
    everything = b"".join(parts.values())
    assert SMTP_PASSWORD.encode() not in everything
    key_file = harness.settings.dev_master_key_file
    if key_file.exists():
        assert key_file.read_bytes().strip() not in everything
    assert b"PRIVATE KEY" not in everything


WEBHOOK_TOKEN = "T0AAAA/B0BBBB/xoxb-webhook-token-9c1d"  # planted


async def test_webhook_urls_go_out_as_their_origin_only(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """V13.3.1 (secrets not exposed): a webhook URL's path and query are its receiver's token, so the
    bundle shows only ``scheme://host:port/…``; the database URL (with its password) is masked."""
    monkeypatch.setenv(
        "BASTION_ALERTS__WEBHOOK_URLS",
        json.dumps([f"https://hooks.example.com/services/{WEBHOOK_TOKEN}", "http://127.0.0.1:9000/hook?token=q-tok"]),
    )
    await incident_in_progress(harness)
    bundle = tmp_path / "incident.tar.gz"
    code, _, err = await bastion(harness, "incident", "export", "--since", SINCE, "--out", str(bundle))
    assert code == 0, err
    parts = members(bundle)
    config = json.loads(parts["config.json"])
    assert config["alerts"]["webhook_urls"] == ["https://hooks.example.com/…", "http://127.0.0.1:9000/…"]
    everything = b"".join(parts.values())
    for secret in (WEBHOOK_TOKEN, "xoxb-webhook-token", "q-tok", "/services/"):
        assert secret.encode() not in everything, secret
    if harness.settings.database_url is not None:
        assert config["database_url"] == "**********"
        assert harness.settings.database_url.get_secret_value().encode() not in everything


async def test_a_tampered_bundle_is_caught(harness: Harness, tmp_path: Path) -> None:
    """Attack side: a changed part no longer matches the MANIFEST; a changed MANIFEST no longer verifies."""
    await incident_in_progress(harness)
    bundle = tmp_path / "incident.tar.gz"
    assert (await bastion(harness, "incident", "export", "--since", SINCE, "--out", str(bundle)))[0] == 0
    parts = members(bundle)
    forged = parts["alerts.json"].replace(b"credential_stuffing", b"nothing_to_see_here")
    listed = dict(line.split("  ")[::-1] for line in parts["MANIFEST"].decode().splitlines())
    assert hashlib.sha256(forged).hexdigest() != listed["alerts.json"]
    code, published, _ = await bastion(harness, "keys", "export-public")
    assert code == 0
    vkeys = [key["vkey"] for key in json.loads(published)["notary"]["keys"]]
    note = parts["MANIFEST.sig"].decode()
    recomputed = note.replace(listed["alerts.json"], hashlib.sha256(forged).hexdigest())
    with pytest.raises(InvalidNote):
        verify_note(recomputed, vkeys)


async def test_bad_arguments_fail_in_one_line(harness: Harness, tmp_path: Path) -> None:
    existing = tmp_path / "exists.tar.gz"
    existing.write_bytes(b"keep me")
    for args, message in [
        (("--since", "yesterday", "--out", str(tmp_path / "a.tgz")), "neither an RFC 3339 time"),
        (("--since", "2026-01-01T00:00:00", "--out", str(tmp_path / "a.tgz")), "no UTC offset"),
        (("--since", "1h", "--until", "2h", "--out", str(tmp_path / "a.tgz")), "before --since"),
        (("--since", "1h", "--out", str(existing)), "exists"),
        (("--since", "1h", "--out", str(tmp_path / "missing" / "a.tgz")), "not a directory"),
    ]:
        code, _, err = await bastion(harness, "incident", "export", *args)
        assert code == 2, (args, err)
        assert message in err, (args, err)
        assert len(err.strip().splitlines()) == 1
    assert existing.read_bytes() == b"keep me"
    assert not (tmp_path / "a.tgz").exists()


def test_the_manifest_format_is_sha256sum() -> None:
    from bastion.cli.forensics import manifest_of

    a, b = b"[]\n", b"{}\n"
    text = manifest_of({"b.json": b, "a.json": a})
    assert text == f"{hashlib.sha256(a).hexdigest()}  a.json\n{hashlib.sha256(b).hexdigest()}  b.json\n"
