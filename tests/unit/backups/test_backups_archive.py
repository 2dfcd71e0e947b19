"""The backup file format: manifest, signed notes, the encrypted tar, extraction's refusals, listing."""

from __future__ import annotations

import datetime as dt
import io
import os
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import zstandard

from bastion.backups.archive import PARTIAL_SUFFIX, extract, list_backups, write_archive
from bastion.backups.destinations import LocalDestination
from bastion.backups.errors import BackupInvalid
from bastion.backups.manifest import (
    Manifest,
    TableDigest,
    file_digest,
    manifest_note,
    parse_sidecar,
    read_sidecar,
    sidecar_note,
    verify_sidecar,
)
from bastion.security import NoteKey, sign_note, token_bytes
from bastion.security.age import encrypt_stream, new_identity

NAME = "backup.example/audit"
AT = dt.datetime(2026, 12, 1, 20, 42, 29, tzinfo=dt.UTC)
BACKUP_ID = "bastion-20261201T204229Z-0a1b2c3d"


@dataclass
class KeySigner:
    seed: bytes
    kid: str = "notary-1"

    def sign(self, body: str) -> str:
        return sign_note(body, NAME, self.seed)

    @property
    def vkey(self) -> str:
        return NoteKey.from_private(NAME, self.seed).vkey()


@pytest.fixture(scope="module")
def signer() -> KeySigner:
    return KeySigner(token_bytes(32))


@pytest.fixture(scope="module")
def identity() -> tuple[str, str]:
    return new_identity()


def _parts(root: Path) -> list[tuple[str, Path]]:
    root.mkdir(exist_ok=True)
    files = {
        "bastion.db": os.urandom(300_000),
        "keys/notary.json": b'{"keys": []}',
        "keys/encryption.json": b'{"keys": [1]}',
        "bastion.toml": b'mode = "dev"\n',
        "tls/cert.pem": b"-----BEGIN CERTIFICATE-----\n",
    }
    parts = []
    for name, data in files.items():
        path = root / name.replace("/", "_")
        path.write_bytes(data)
        parts.append((name, path))
    return parts


def _manifest(parts: list[tuple[str, Path]], recipient: str) -> Manifest:
    return Manifest(
        id=BACKUP_ID,
        created_at=AT,
        bastion_version="1.0",
        schema_revision="0009",
        database="sqlite",
        tables={"users": TableDigest(2, "ab" * 32)},
        parts={name: file_digest(path) for name, path in parts},
        recipients=[recipient],
        notary_kid="notary-1",
    )


def _backup(
    tmp_path: Path, signer: KeySigner, recipient: str, *, parts: list[tuple[str, Path]] | None = None
) -> tuple[Path, Manifest]:
    parts = parts if parts is not None else _parts(tmp_path / "staged")
    manifest = _manifest(parts, recipient)
    target = tmp_path / "out" / manifest.name
    target.parent.mkdir(exist_ok=True)
    body = manifest.to_json()
    sig = manifest_note(body, manifest.id, signer).encode()
    encrypted = write_archive(target, body, sig, parts, [recipient], mtime=AT.timestamp())
    sidecar = target.with_name(target.name + ".manifest")
    sidecar.write_text(sidecar_note(target.name, encrypted, body, signer))
    return target, manifest


def test_round_trip_restores_every_part_and_the_manifest(
    tmp_path: Path, signer: KeySigner, identity: tuple[str, str]
) -> None:
    """V14.2.4: a backup decrypts only with the offline identity, and extracts byte for byte."""
    secret, recipient = identity
    parts = _parts(tmp_path / "staged")
    target, manifest = _backup(tmp_path, signer, recipient, parts=parts)
    assert verify_sidecar(target, [signer.vkey]) == manifest
    into = tmp_path / "into"
    into.mkdir()
    seen: list[int] = []
    assert extract(target, secret, into, [signer.vkey], progress=seen.append) == manifest
    for name, path in parts:
        assert (into / name).read_bytes() == path.read_bytes()
        assert (into / name).stat().st_mode & 0o777 == 0o600
    assert sum(seen) == target.stat().st_size
    assert read_sidecar(target.with_name(target.name + ".manifest")).manifest == manifest


def test_the_file_is_encrypted_and_compressed(tmp_path: Path, signer: KeySigner, identity: tuple[str, str]) -> None:
    staged = tmp_path / "staged"
    staged.mkdir()
    plain = staged / "db"
    plain.write_bytes(b"a readable row " * 50_000)
    target, _ = _backup(tmp_path, signer, identity[1], parts=[("bastion.db", plain)])
    data = target.read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n")
    assert b"readable row" not in data
    assert len(data) < plain.stat().st_size // 10


def test_a_key_from_elsewhere_verifies_nothing(tmp_path: Path, signer: KeySigner, identity: tuple[str, str]) -> None:
    """V11.3.3 (attacker's side): a forger with the recipient can make a well-formed backup, but
    not one that verifies against the operator's notary keys."""
    secret, recipient = identity
    forger = KeySigner(token_bytes(32))
    target, _ = _backup(tmp_path, forger, recipient)
    with pytest.raises(BackupInvalid, match="not signed by a trusted notary key"):
        verify_sidecar(target, [signer.vkey])
    into = tmp_path / "into"
    into.mkdir()
    # Beside its sidecar, nothing is decrypted; without it, manifest.sig refuses it.
    with pytest.raises(BackupInvalid, match="not signed by a trusted notary key"):
        extract(target, secret, into, [signer.vkey])
    assert list(into.iterdir()) == []
    with pytest.raises(BackupInvalid, match=r"manifest\.sig is not a valid signature"):
        extract(target, secret, into, [signer.vkey], check_sidecar=False)


def test_a_flipped_byte_in_the_file_is_refused(tmp_path: Path, signer: KeySigner, identity: tuple[str, str]) -> None:
    """V11.3.3: any change to the encrypted file is refused, by the signed hash and by age itself."""
    secret, recipient = identity
    target, _ = _backup(tmp_path, signer, recipient)
    data = bytearray(target.read_bytes())
    for offset in (40, len(data) // 2, len(data) - 1):
        flipped = bytearray(data)
        flipped[offset] ^= 0x01
        target.write_bytes(bytes(flipped))
        with pytest.raises(BackupInvalid, match="SHA-256 differs"):
            verify_sidecar(target, [signer.vkey])
        into = tmp_path / f"into-{offset}"
        into.mkdir()
        with pytest.raises(BackupInvalid):
            extract(target, secret, into, [signer.vkey])


def test_a_truncated_file_is_refused(tmp_path: Path, signer: KeySigner, identity: tuple[str, str]) -> None:
    secret, recipient = identity
    target, _ = _backup(tmp_path, signer, recipient)
    data = target.read_bytes()
    target.write_bytes(data[: len(data) - 100])
    with pytest.raises(BackupInvalid, match="bytes, the signed manifest says"):
        verify_sidecar(target, [signer.vkey])
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(BackupInvalid):
        extract(target, secret, into, [signer.vkey])


def test_a_changed_part_under_a_valid_signature_is_refused(
    tmp_path: Path, signer: KeySigner, identity: tuple[str, str]
) -> None:
    """A part that differs from what the signed manifest says, even by one byte, is refused by name."""
    secret, recipient = identity
    parts = _parts(tmp_path / "staged")
    for index, (name, path) in enumerate(parts):
        manifest = _manifest(parts, recipient)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x80
        changed = tmp_path / f"changed-{index}"
        changed.write_bytes(bytes(data))
        swapped = [(n, changed if n == name else p) for n, p in parts]
        target = tmp_path / f"{index}.age"
        body = manifest.to_json()
        write_archive(target, body, manifest_note(body, manifest.id, signer).encode(), swapped, [recipient], mtime=0)
        into = tmp_path / f"into-{index}"
        into.mkdir()
        with pytest.raises(BackupInvalid, match=rf"{name}: its SHA-256 differs"):
            extract(target, secret, into, [signer.vkey])


def test_a_changed_manifest_or_signature_is_refused(
    tmp_path: Path, signer: KeySigner, identity: tuple[str, str]
) -> None:
    secret, recipient = identity
    parts = _parts(tmp_path / "staged")
    manifest = _manifest(parts, recipient)
    body = manifest.to_json()
    sig = manifest_note(body, manifest.id, signer).encode()
    lying = body.replace(b'"rows":2', b'"rows":3')
    bad_sig = bytearray(sig)
    bad_sig[-10] = ord("A") if bad_sig[-10] != ord("A") else ord("B")
    for label, (json_bytes, sig_bytes) in {"json": (lying, sig), "sig": (body, bytes(bad_sig))}.items():
        target = tmp_path / f"{label}.age"
        write_archive(target, json_bytes, sig_bytes, parts, [recipient], mtime=0)
        into = tmp_path / f"into-{label}"
        into.mkdir()
        with pytest.raises(BackupInvalid, match="manifest"):
            extract(target, secret, into, [signer.vkey])


def _evil_archive(target: Path, recipient: str, manifest_json: bytes, sig: bytes, member: tarfile.TarInfo) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("manifest.json", manifest_json), ("manifest.sig", sig)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    compressed = zstandard.ZstdCompressor().compress(raw.getvalue())
    with target.open("wb") as file:
        encrypt_stream(io.BytesIO(compressed), file, [recipient])


@pytest.mark.parametrize(
    "case",
    [
        ("../escape", tarfile.REGTYPE, "not a plain relative file"),
        ("/etc/passwd", tarfile.REGTYPE, "not a plain relative file"),
        ("keys/../../x", tarfile.REGTYPE, "not a plain relative file"),
        ("keys/link", tarfile.SYMTYPE, "not a plain relative file"),
        ("keys/hard", tarfile.LNKTYPE, "not a plain relative file"),
        ("keys/fifo", tarfile.FIFOTYPE, "not a plain relative file"),
        ("keys/sub/deeper", tarfile.REGTYPE, "which no backup has"),
        ("bin/sh", tarfile.REGTYPE, "which no backup has"),
        ("keys/unlisted.json", tarfile.REGTYPE, "does not list"),
    ],
)
def test_extraction_refuses_members_outside_the_format(
    tmp_path: Path, signer: KeySigner, identity: tuple[str, str], case: tuple[str, bytes, str]
) -> None:
    """V5.3.2 (attacker's side): a member can write nowhere but its own part's path under ``into``."""
    name, kind, message = case
    secret, recipient = identity
    manifest = replace(_manifest([], recipient), parts={})
    body = manifest.to_json()
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    member.size = 4 if kind == tarfile.REGTYPE else 0
    target = tmp_path / "evil.age"
    _evil_archive(target, recipient, body, manifest_note(body, manifest.id, signer).encode(), member)
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(BackupInvalid, match=message):
        extract(target, secret, into, [signer.vkey])
    assert not (tmp_path / "escape").exists()
    assert not any(path.is_symlink() for path in into.rglob("*"))


def test_a_missing_part_is_refused(tmp_path: Path, signer: KeySigner, identity: tuple[str, str]) -> None:
    secret, recipient = identity
    parts = _parts(tmp_path / "staged")
    manifest = _manifest(parts, recipient)
    body = manifest.to_json()
    target = tmp_path / "short.age"
    write_archive(target, body, manifest_note(body, manifest.id, signer).encode(), parts[:-1], [recipient], mtime=0)
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(BackupInvalid, match=r"lacks tls/cert\.pem"):
        extract(target, secret, into, [signer.vkey])


def test_another_identity_cannot_decrypt(tmp_path: Path, signer: KeySigner, identity: tuple[str, str]) -> None:
    target, _ = _backup(tmp_path, signer, identity[1])
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(BackupInvalid, match="cannot be decrypted with this identity"):
        extract(target, new_identity()[0], into, [signer.vkey])
    assert list(into.iterdir()) == []


@pytest.mark.parametrize(
    "change",
    [
        b'"format":"bastion-backup/v2"',
        b'"database":"mysql"',
        b'"created_at":"yesterday"',
        b'"rows":-1',
        b'"sha256":"zz"',
    ],
)
def test_manifest_fields_are_checked(change: bytes, identity: tuple[str, str]) -> None:
    part = b'"parts":{"bastion.db":{"size":1,"sha256":"' + b"a" * 64 + b'"}}'
    good = _manifest([], identity[1]).to_json().replace(b'"parts":{}', part)
    assert Manifest.from_json(good).parts["bastion.db"].size == 1
    key = change.split(b":")[0]
    start = good.index(key)
    end = good.index(b",", start)
    if key == b'"sha256"':
        end = good.index(b"}", start)
    bad = good[:start] + change + good[end:]
    with pytest.raises(BackupInvalid, match=r"manifest\.json"):
        Manifest.from_json(bad)


def test_list_shows_only_signed_complete_backups_as_complete(
    tmp_path: Path, signer: KeySigner, identity: tuple[str, str]
) -> None:
    target, manifest = _backup(tmp_path, signer, identity[1])
    out = target.parent
    partial = out / "bastion-20261201T210000Z-00000000.tar.zst.age.partial"
    partial.write_bytes(b"age-encryption.org/v1\n")
    no_sidecar = out / "bastion-20261201T220000Z-11111111.tar.zst.age"
    no_sidecar.write_bytes(b"age")
    (out / "notes.txt").write_text("not a backup")
    infos = list_backups(LocalDestination(out), [signer.vkey])
    assert [(i.id, i.complete) for i in infos] == [
        (manifest.id, True),
        ("bastion-20261201T210000Z-00000000", False),
        ("bastion-20261201T220000Z-11111111", False),
    ]
    assert infos[0].size == target.stat().st_size
    assert partial.name.endswith(PARTIAL_SUFFIX)
    forger = KeySigner(token_bytes(32))
    assert [i.complete for i in list_backups(LocalDestination(out), [forger.vkey])] == [False, False, False]
    assert parse_sidecar(target.with_name(target.name + ".manifest").read_bytes()).size == infos[0].size


def test_table_digests_see_every_change_and_blobs_by_hash(tmp_path: Path) -> None:
    """A changed value, a reordered or extra row changes the table's digest; equal content in
    another file gives the same digest (what a restore compares)."""
    import sqlite3

    import sqlalchemy as sa

    from bastion.backups.snapshot import table_digests
    from bastion.backups.verify import compare_tables

    def digests(rows: list[tuple[int, str, bytes | None]]) -> dict[str, TableDigest]:
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.db"
        connection = sqlite3.connect(path)
        with connection:
            connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
            connection.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
        connection.close()
        engine = sa.create_engine(f"sqlite:///{path}")
        with engine.connect() as conn:
            found = table_digests(conn)
        engine.dispose()
        return found

    rows = [(1, "a", b"\x00" * 10), (2, "b", None), (3, "c", os.urandom(2_000_000))]
    base = digests(rows)
    assert base["t"].rows == 3
    assert digests(list(reversed(rows))) == base  # primary-key order, not insertion order
    changed = [(1, "a", b"\x00" * 9 + b"\x01"), *rows[1:]]
    for other in (changed, [*rows[:2]], [(1, "A", rows[0][2]), *rows[1:]]):
        assert digests(other)["t"] != base["t"]
        with pytest.raises(BackupInvalid, match="table t"):
            compare_tables(base, digests(other))
