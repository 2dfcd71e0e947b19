"""Tampering and the exit codes of `bastion backup verify | keygen | create`, on SQLite only: the file
format, the signatures and the refusals are the same whatever database is inside (the PostgreSQL
side of create and verify is in test_backups_create.py)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from bastion.audit.models import AuditEvent
from bastion.backups.archive import list_backups
from bastion.backups.destinations import LocalDestination, local_backup_dir
from bastion.security import NoteKey, token_bytes
from factories.backups import IDENTITY, RECIPIENT
from harness import Harness

pytestmark = pytest.mark.clock_now  # the command line dates its audit events by the real clock
runner = CliRunner()


@pytest.fixture
def database_url() -> None:
    """The embedded SQLite file only."""
    return


@pytest.fixture(autouse=True)
def _cli_environment(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_DATABASE_URL", harness.settings.sqlalchemy_url)
    monkeypatch.setenv("BASTION_BACKUPS__RECIPIENTS", json.dumps([RECIPIENT]))


async def bastion(harness: Harness, *args: str) -> tuple[int, str, str]:
    from bastion.cli import app

    result = await asyncio.to_thread(runner.invoke, app, ["--data-dir", str(harness.settings.data_dir), *args])
    return result.exit_code, result.stdout, result.stderr


async def events(harness: Harness, tag: str) -> list[tuple[str, dict[str, object]]]:
    """(outcome, details) of the events tagged ``tag``, oldest first."""
    rows = await harness.app.state.db.all(select(AuditEvent).where(AuditEvent.tag == tag).order_by(AuditEvent.id))
    return [(row.outcome, row.details) for row in rows]


def identity_file(tmp_path: Path, text: str = IDENTITY) -> Path:
    path = tmp_path / "identity.txt"
    path.write_text(text + "\n")
    return path


def _flip(path: Path, offset: int) -> bytes:
    data = path.read_bytes()
    flipped = bytearray(data)
    flipped[offset] ^= 0x01
    path.write_bytes(bytes(flipped))
    return data


async def test_a_flipped_byte_anywhere_is_refused_with_one_line(harness: Harness, tmp_path: Path) -> None:
    """V11.3.3: a byte flipped in the file (header, middle, last chunk), in the sidecar's manifest or
    in its signature makes `backup verify` exit 1 with one line, with and without the identity."""
    code, out, err = await bastion(harness, "backup", "create")
    assert code == 0, err
    path = Path(out.strip().splitlines()[-1])
    sidecar = path.with_name(path.name + ".manifest")
    identity = identity_file(tmp_path)
    note = sidecar.read_text()
    size = len(await asyncio.to_thread(path.read_bytes))
    places = {
        "file header": (path, 30),
        "file middle": (path, size // 2),
        "file end": (path, size - 2),
        "sidecar manifest": (sidecar, note.index('"tables"') + 12),
        "sidecar size": (sidecar, note.index("\n", note.index("\n") + 1) + 1),
        "sidecar signature": (sidecar, len(note) - 10),
    }
    for label, (target, offset) in places.items():
        original = _flip(target, offset)
        for extra in ([], ["--identity", str(identity)]):
            code, out, err = await bastion(harness, "backup", "verify", str(path), *extra)
            assert code == 1, (label, extra, out, err)
            assert len(err.strip().splitlines()) == 1, (label, err)
            assert err.startswith("error: "), (label, err)
        target.write_bytes(original)
    code, out, err = await bastion(harness, "backup", "verify", str(path), "--identity", str(identity))
    assert code == 0, err
    assert "good" in out
    verified = await events(harness, "backup:verify")
    assert [outcome for outcome, _ in verified] == ["failure"] * 12 + ["success"]
    assert verified[-1][1]["full"] is True
    created = await events(harness, "backup:create")
    assert [(o, d["name"]) for o, d in created] == [("success", path.name)]


async def test_exit_codes_of_the_contract(harness: Harness, tmp_path: Path) -> None:
    """Exit 2 (cannot run) and 1 (bad backup), one line each; keygen never overwrites an identity."""
    code, out, err = await bastion(harness, "backup", "keygen", "--out", str(tmp_path / "id.txt"))
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith("age1")
    assert (tmp_path / "id.txt").stat().st_mode & 0o777 == 0o600
    first = (tmp_path / "id.txt").read_text()
    code, _, err = await bastion(harness, "backup", "keygen", "--out", str(tmp_path / "id.txt"))
    assert (code, (tmp_path / "id.txt").read_text()) == (2, first)
    assert "never overwritten" in err

    code, out, err = await bastion(harness, "backup", "create")
    assert code == 0, err
    path = Path(out.strip().splitlines()[-1])
    # Not one of the recipients: the backup may be fine, the command cannot check it.
    code, _, err = await bastion(harness, "backup", "verify", str(path), "--identity", str(tmp_path / "id.txt"))
    assert code == 2, err
    assert "not one of the backup's recipients" in err
    code, _, err = await bastion(harness, "backup", "verify", str(tmp_path / "missing.tar.zst.age"))
    assert code == 2, err
    # Another instance's notary keys (an attacker's export-public file) verify nothing.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"notary": {"keys": [{"vkey": NoteKey.from_private("x", token_bytes(32)).vkey()}]}}))
    code, _, err = await bastion(harness, "backup", "verify", str(path), "--key", str(other))
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1
    # A sidecar gone: incomplete in the listing, refused by verify.
    path.with_name(path.name + ".manifest").unlink()
    code, out, _ = await bastion(harness, "backup", "list", "--json")
    assert [b["complete"] for b in json.loads(out)["backups"]] == [False]
    code, _, err = await bastion(harness, "backup", "verify", str(path))
    assert code == 1, err


async def test_create_without_recipients_cannot_run(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_BACKUPS__RECIPIENTS", "[]")
    code, _, err = await bastion(harness, "backup", "create")
    assert code == 2
    assert "no recipients" in err
    assert [outcome for outcome, _ in await events(harness, "backup:create")] == ["failure"]
    assert list_backups(LocalDestination(local_backup_dir(harness.settings))) == []


async def test_verify_decrypts_the_file_it_hashed_in_a_private_directory(harness: Harness, tmp_path: Path) -> None:
    """V14.2.4 / V15.4.2: a file renamed over the backup once its hash is checked is never the one
    decrypted (hash and decryption read one open file); the plaintext database goes into a 0700
    ``.verify-*`` directory under the work dir, never beside the backup (perhaps an off-site
    mount), and such a directory a crash left there is removed once stale."""
    from bastion.backups.create import create_backup, trusted_vkeys
    from bastion.backups.verify import verify_backup
    from bastion.secrets import open_keyrings

    keys = open_keyrings(harness.settings)
    created = await create_backup(harness.settings, keys)
    assert created.path is not None
    path = created.path
    work = tmp_path / "work"
    work.mkdir()
    stale, fresh = work / ".verify-crashed", work / ".verify-running"
    stale.mkdir()
    fresh.mkdir()
    os.utime(stale, (0, 0))
    swapped: list[bool] = []
    seen: list[tuple[list[Path], list[Path], list[int]]] = []
    impostor = tmp_path / "impostor"
    impostor.write_bytes(b"age-encryption.org/v1\n" + token_bytes(path.stat().st_size))

    def progress(_: int) -> None:
        if not swapped:
            swapped.append(True)
            os.replace(impostor, path)  # after the first chunk hashed: the rest is the attacker's
        mine = [p for p in work.glob(".verify-*") if p not in (fresh, stale)]
        seen.append((mine, list(path.parent.glob(".verify-*")), [p.stat().st_mode & 0o777 for p in mine]))

    manifest = await verify_backup(
        path, trusted_vkeys(harness.settings, keys), identity_text=IDENTITY, progress=progress, work_dir=work
    )
    assert manifest == created.manifest
    assert swapped
    assert any(mine == [] for mine, _, _ in seen)  # hashing: not yet extracted
    assert any(len(mine) == 1 and modes == [0o700] for mine, _, modes in seen)  # decrypting
    assert all(beside == [] for _, beside, _ in seen)
    assert not stale.exists()
    assert fresh.exists()
    assert [p for p in work.glob(".verify-*") if p != fresh] == []


async def test_a_backup_holds_the_admin_ca(harness: Harness, tmp_path: Path) -> None:
    """V14.2.4: the admin client CA (certificate, CRL, registry of issued certificates) is in the
    backup, at the path a restore puts it back; its private key only sealed, in keys/."""
    import datetime as dt

    from bastion.backups.archive import extract
    from bastion.backups.create import create_backup, trusted_vkeys
    from bastion.network.ca import BastionCa, CaPaths
    from bastion.secrets import open_keyrings

    BastionCa.init(harness.settings, now=dt.datetime.now(dt.UTC))
    paths = CaPaths.of(harness.settings)
    keys = open_keyrings(harness.settings)
    created = await create_backup(harness.settings, keys)
    assert created.path is not None
    assert {"ca/ca.pem", "ca/crl.pem", f"keys/{paths.sealed_key.name}"} <= set(created.manifest.parts)
    into = tmp_path / "into"
    into.mkdir()
    await asyncio.to_thread(extract, created.path, IDENTITY, into, trusted_vkeys(harness.settings, keys))
    for source in (paths.certificate, paths.crl, paths.sealed_key):
        assert (into / source.relative_to(harness.settings.data_dir)).read_bytes() == source.read_bytes()
