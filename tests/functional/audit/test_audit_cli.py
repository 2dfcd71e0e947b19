"""``bastion audit export | verify --bundle | prove`` and the standalone
verifier script of docs/audit.md: a bundle verifies offline with only the
public keys (``bastion keys export-public``), and any change to it is named.
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bastion.audit.notary import notary_of
from bastion.audit.tree import AuditLog, origin_of
from bastion.cli import app as cli
from bastion.clock import FrozenClock, SystemClock
from bastion.db import open_database
from bastion.secrets import open_keyrings
from bastion.security import merkle
from bastion.security.notes import parse_checkpoint, verify_note
from bastion.settings import Settings
from factories.audit import write_events

DOC = Path(__file__).parents[3] / "docs" / "audit.md"
runner = CliRunner()


def bastion(data: Path, *args: str) -> tuple[int, list[str], str]:
    result = runner.invoke(cli, [*args, "--data-dir", str(data)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout.strip().splitlines(), result.stderr


async def _events(settings: Settings, count: int, *, checkpoint_every: int = 0) -> None:
    db = open_database(settings.sqlalchemy_url)
    keys = open_keyrings(settings)
    log = AuditLog(settings, db, SystemClock(), keys.hmac, notary_of(keys, origin_of(settings)))
    try:
        clock = FrozenClock(dt.datetime.now(dt.UTC))
        done = 0
        while done < count:
            step = checkpoint_every or count
            await write_events(db, clock, step)
            done += step
            if checkpoint_every:
                await log.sequence_now()
                await log.checkpoint_now()
    finally:
        await db.close()


@pytest.fixture
def instance(
    make_settings: Callable[..., Settings], database_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    if database_url is not None:
        monkeypatch.setenv("BASTION_DATABASE_URL", database_url)
    return make_settings()


def _script(tmp_path: Path) -> Path:
    text = DOC.read_text()
    block = re.search(r"<!-- verify-bundle-script -->\n```python\n(.*?)```", text, re.S)
    assert block is not None, "docs/audit.md lost its verifier script"
    path = tmp_path / "verify_bundle.py"
    path.write_text(block[1])
    return path


def _run_script(script: Path, bundle: Path, vkey: str) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, str(script), str(bundle), vkey], capture_output=True, text=True, timeout=120, check=False
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout.strip().splitlines()


def test_an_exported_bundle_verifies_offline_and_any_change_is_named(instance: Settings, tmp_path: Path) -> None:
    """V16.4.2: the bundle, checked with only the public key (Bastion's command and the documented script)."""
    data = instance.data_dir
    asyncio.run(_events(instance, 300))
    bundle_path = tmp_path / "bundle.json"
    code, lines, err = bastion(data, "audit", "export", "--since", "30d", "--out", str(bundle_path))
    assert code == 0, err
    assert lines[-1].startswith("300 events, tree size 300")
    assert bundle_path.stat().st_mode & 0o777 == 0o600
    keys_path = tmp_path / "keys.json"
    code, _, err = bastion(data, "keys", "export-public", "--out", str(keys_path))
    assert code == 0, err
    bundle = json.loads(bundle_path.read_text())
    assert bundle["format"] == "bastion-audit-bundle"
    assert len(bundle["events"]) == 300
    assert bundle["tree_size"] == 300
    vkey = json.loads(keys_path.read_text())["notary"]["keys"][0]["vkey"]
    assert bundle["vkeys"] == [vkey]

    # Offline: no data directory, only the public keys.
    offline = runner.invoke(cli, ["audit", "verify", "--bundle", str(bundle_path), "--key", str(keys_path)])
    assert offline.exit_code == 0, offline.stdout
    assert offline.stdout.strip().splitlines()[-1] == "intact"
    assert "checkpoints: 1 in the bundle" in offline.stdout
    assert "in the database" not in offline.stdout
    script = _script(tmp_path)
    code, lines = _run_script(script, bundle_path, vkey)
    assert code == 0, lines
    assert lines[-1].startswith("300 events verified")

    def tampered(change: Callable[[dict[str, Any]], None]) -> Path:
        copy = json.loads(bundle_path.read_text())
        change(copy)
        path = tmp_path / "tampered.json"
        path.write_text(json.dumps(copy))
        return path

    victim = bundle["events"][123]
    changes: list[Callable[[dict[str, Any]], None]] = [
        lambda b: b["events"][123].update(ip="192.0.2.66"),
        lambda b: b["events"][123].update(tag="auth:logout"),
        lambda b: b["events"][123]["details"].update(n=-1),
        lambda b: b["events"][123].update(proof=b["events"][124]["proof"]),
    ]
    for change in changes:
        path = tampered(change)
        result = runner.invoke(cli, ["audit", "verify", "--bundle", str(path), "--key", str(keys_path)])
        assert result.exit_code == 1
        assert result.stdout.strip().splitlines()[-1] == str(victim["id"])
        code, lines = _run_script(script, path, vkey)
        assert code == 1
        assert lines[-1] == str(victim["id"])

    # A checkpoint not signed by the trusted key: nothing in the bundle can be trusted.
    other = tmp_path / "other-keys.txt"
    other.write_text(vkey.split("+")[0] + "+00000000+AQ" + "A" * 42 + "=\n")
    result = runner.invoke(cli, ["audit", "verify", "--bundle", str(bundle_path), "--key", str(other)])
    assert result.exit_code in {1, 2}
    if result.exit_code == 1:
        assert result.stdout.strip().splitlines()[-1] == str(bundle["events"][0]["id"])


def test_prove_prints_inclusion_and_consistency_proofs_that_verify(instance: Settings) -> None:
    data = instance.data_dir
    asyncio.run(_events(instance, 60, checkpoint_every=20))
    keys = open_keyrings(instance)
    vkeys = notary_of(keys, origin_of(instance)).vkeys()
    code, lines, err = bastion(data, "audit", "prove", "17")
    assert code == 0, err
    proof = json.loads("\n".join(lines))
    _, size, root = parse_checkpoint(verify_note(proof["checkpoint"], vkeys))
    assert (size, root.hex()) == (proof["tree_size"], proof["root_hash"])
    assert merkle.verify_inclusion(
        bytes.fromhex(proof["leaf_hash"]), proof["leaf_index"], size, [bytes.fromhex(p) for p in proof["proof"]], root
    )
    code, lines, err = bastion(data, "audit", "prove", "--consistency", "20", "60")
    assert code == 0, err
    consistency = json.loads("\n".join(lines))
    old = parse_checkpoint(verify_note(consistency["old_checkpoint"], vkeys))
    new = parse_checkpoint(verify_note(consistency["new_checkpoint"], vkeys))
    assert merkle.verify_consistency(20, 60, old[2], new[2], [bytes.fromhex(p) for p in consistency["proof"]])
    assert (old[2].hex(), new[2].hex()) == (consistency["old_root"], consistency["new_root"])


def test_bad_input_is_one_line_and_exit_2(instance: Settings, tmp_path: Path) -> None:
    data = instance.data_dir
    asyncio.run(_events(instance, 5))
    not_json = tmp_path / "x.json"
    not_json.write_text("{nope")
    cases = [
        ("audit", "prove", "999999"),
        (
            "audit",
            "prove",
        ),
        ("audit", "prove", "1"),  # not covered by a checkpoint yet
        ("audit", "export", "--since", "yesterday-ish", "--out", str(tmp_path / "b.json")),
        ("audit", "export", "--since", "2026-01-01T00:00:00", "--out", str(tmp_path / "b.json")),
        ("audit", "verify", "--bundle", str(not_json)),
        ("audit", "verify", "--checkpoints", str(tmp_path / "missing")),
        ("audit", "prove", "--consistency", "5", "2"),
    ]
    for args in cases:
        code, lines, err = bastion(data, *args)
        assert code == 2, (args, lines, err)
        assert len(err.strip().splitlines()) == 1, (args, err)
        assert "Traceback" not in err
    # And an instance that does not exist cannot be verified: exit 2, not "intact".
    result = runner.invoke(cli, ["audit", "verify", "--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 2


async def _erase(settings: Settings) -> uuid.UUID:
    """Redact one person's events and purge the oldest ones; the person's id."""
    import sqlalchemy as sa

    from bastion.audit import purge_events_before, redact_events
    from bastion.audit.models import AuditEvent
    from bastion.db import transaction

    db = open_database(settings.sqlalchemy_url)
    try:
        person = await db.value(sa.select(AuditEvent.actor_id).where(AuditEvent.id == 40))
        oldest = await db.value(sa.select(AuditEvent.at).where(AuditEvent.id == 10))
        async with transaction(db) as tx:
            await redact_events(tx, person)
            await purge_events_before(tx, oldest + dt.timedelta(microseconds=1))
        return uuid.UUID(str(person))
    finally:
        await db.close()


def test_redacted_and_purged_events_verify_in_a_bundle_too(instance: Settings, tmp_path: Path) -> None:
    """Erasure is not tampering, off the box as well: the bundle and the documented script accept them."""
    data = instance.data_dir
    asyncio.run(_events(instance, 100, checkpoint_every=50))
    person = asyncio.run(_erase(instance))
    code, lines, _ = bastion(data, "audit", "verify")
    assert (code, lines[-1]) == (0, "intact")
    assert "redacted 0" not in lines[0]
    assert "purged 0" not in lines[0]
    bundle_path = tmp_path / "bundle.json"
    code, _, err = bastion(data, "audit", "export", "--since", "30d", "--out", str(bundle_path))
    assert code == 0, err
    bundle = json.loads(bundle_path.read_text())
    assert any(e["redacted"] for e in bundle["events"])
    assert any(e["purged"] for e in bundle["events"])
    assert str(person) not in bundle_path.read_text()  # the person is gone from what leaves the box
    result = runner.invoke(cli, ["audit", "verify", "--bundle", str(bundle_path), "--data-dir", str(data)])
    assert result.exit_code == 0, result.stdout
    vkey = bundle["vkeys"][0]
    code, lines = _run_script(_script(tmp_path), bundle_path, vkey)
    assert code == 0, lines
