"""Tests for bastion.security.keys: master key, keyrings, rotation, key files."""

from __future__ import annotations

import base64
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.security import (
    Encryptor,
    KeyInfo,
    Keyring,
    KeyringError,
    MasterKey,
    aad_for,
    check_key_file_permissions,
)

RAW = bytes(range(32))


@pytest.mark.parametrize(
    "text",
    [
        RAW.hex(),
        RAW.hex().upper(),
        base64.b64encode(RAW).decode(),
        base64.b64encode(RAW).decode().rstrip("="),
        base64.urlsafe_b64encode(RAW).decode(),
        base64.urlsafe_b64encode(RAW).decode().rstrip("="),
        "  " + RAW.hex() + "\n",
    ],
    ids=["hex", "HEX", "base64", "base64-unpadded", "base64url", "base64url-unpadded", "file-newline"],
)
def test_v13_3_1_master_key_accepts_hex_and_base64(text: str) -> None:
    """ASVS V13.3.1: the master key is read in the usual encodings, to the same bytes."""
    assert MasterKey.from_text(text).to_text() == base64.urlsafe_b64encode(RAW).decode().rstrip("=")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "short",
        bytes(31).hex(),
        base64.b64encode(bytes(31)).decode(),
        "not base64 at all!",
        "a" * 43 + "=" + "a",
        "é" * 64,
    ],
    ids=["empty", "short", "hex-31-bytes", "base64-31-bytes", "bad-alphabet", "inner-padding", "non-ascii"],
)
def test_v11_2_3_master_key_shorter_than_256_bits_or_undecodable_is_refused(text: str) -> None:
    """ASVS V11.2.3: fewer than 256 bits, or garbage, is a one-line KeyringError."""
    with pytest.raises(KeyringError, match=r"at least 256 bits \(32 bytes\)") as caught:
        MasterKey.from_text(text)
    assert "\n" not in str(caught.value)


def test_v13_3_1_master_key_never_shows_its_bytes() -> None:
    """ASVS V13.3.1: repr/str are masked, so a logged key object leaks nothing."""
    key = MasterKey.generate()
    assert repr(key) == "MasterKey('**********')"
    assert str(key) == "MasterKey('**********')"
    assert f"{key}" == "MasterKey('**********')"
    assert key.to_text() not in repr(key)
    assert "=" not in key.to_text()


def test_v11_5_1_generated_master_keys_are_random_256_bit() -> None:
    """ASVS V11.5.1: generated master keys are 32 CSPRNG bytes and round-trip."""
    first, second = MasterKey.generate(), MasterKey.generate()
    assert first.to_text() != second.to_text()
    assert len(base64.urlsafe_b64decode(first.to_text() + "=")) == 32
    assert MasterKey.from_text(first.to_text()).to_text() == first.to_text()


def test_v11_1_1_new_keyring_has_one_active_key_in_a_0600_file(
    keys_dir: Path, master: MasterKey, encryption_keyring: Keyring
) -> None:
    """ASVS V11.1.1, V13.3.2: one active 256-bit key, file readable by the owner only."""
    path = keys_dir / "encryption.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    [info] = encryption_keyring.kids()
    assert info == KeyInfo(kid=encryption_keyring.active_kid, created_at=info.created_at, status="active")
    assert len(base64.urlsafe_b64decode(info.kid + "=")) == 8
    assert info.created_at.utcoffset() == timedelta(0)
    assert datetime.now(UTC) - info.created_at < timedelta(minutes=1)
    assert len(encryption_keyring.secret(info.kid)) == 32
    # Only the keyring file is left behind: no temp files from the atomic write.
    assert sorted(p.name for p in keys_dir.iterdir()) == ["encryption.json"]


def test_v13_3_1_key_material_is_wrapped_at_rest(keys_dir: Path, encryption_keyring: Keyring) -> None:
    """ASVS V13.3.1: the file holds no key material in clear, in any common encoding."""
    text = (keys_dir / "encryption.json").read_text()
    secret = encryption_keyring.secret(encryption_keyring.active_kid)
    for encoded in (
        secret.hex(),
        base64.b64encode(secret).decode().rstrip("="),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
    ):
        assert encoded not in text


def test_v13_3_1_reload_gives_the_same_keys(keys_dir: Path, master: MasterKey, encryption_keyring: Keyring) -> None:
    """ASVS V13.3.1: the same master key unwraps the same keys."""
    encryption_keyring.rotate()
    reloaded = Keyring.load(keys_dir, "encryption", master)
    assert reloaded.kids() == encryption_keyring.kids()
    for info in reloaded.kids():
        assert reloaded.secret(info.kid) == encryption_keyring.secret(info.kid)


def test_v13_3_1_load_or_create_never_overwrites(keys_dir: Path, master: MasterKey) -> None:
    """ASVS V13.3.1: an existing keyring file is loaded, never replaced, even if unreadable."""
    first = Keyring.load_or_create(keys_dir, "encryption", master)
    before = (keys_dir / "encryption.json").read_bytes()
    second = Keyring.load_or_create(keys_dir, "encryption", master)
    assert second.kids() == first.kids()
    assert (keys_dir / "encryption.json").read_bytes() == before

    with pytest.raises(KeyringError, match="cannot be decrypted with this master key"):
        Keyring.load_or_create(keys_dir, "encryption", MasterKey.generate())
    assert (keys_dir / "encryption.json").read_bytes() == before

    (keys_dir / "hmac.json").write_text("garbage")
    with pytest.raises(KeyringError, match="is corrupt"):
        Keyring.load_or_create(keys_dir, "hmac", master)
    assert (keys_dir / "hmac.json").read_text() == "garbage"


def test_v11_1_1_rotation_retires_the_old_key_and_old_blobs_still_decrypt(
    keys_dir: Path, master: MasterKey, encryption_keyring: Keyring
) -> None:
    """ASVS V11.1.1, V13.3.4: rotation persists a new active key; the old one is
    retired but still decrypts, and new blobs use the new kid."""
    encryptor = Encryptor(encryption_keyring)
    old_kid = encryption_keyring.active_kid
    old_blob = encryptor.encrypt(b"before rotation", aad_for("t"))

    new_kid = encryption_keyring.rotate()

    assert new_kid != old_kid
    assert encryption_keyring.active_kid == new_kid
    assert [(i.kid, i.status) for i in encryption_keyring.kids()] == [
        (old_kid, "retired"),
        (new_kid, "active"),
    ]
    reloaded = Encryptor(Keyring.load(keys_dir, "encryption", master))
    assert reloaded.decrypt(old_blob, aad_for("t")) == b"before rotation"
    assert reloaded.key_id(reloaded.encrypt(b"after", aad_for("t"))) == new_kid
    assert encryption_keyring.secret(new_kid) != encryption_keyring.secret(old_kid)
    assert sorted(p.name for p in keys_dir.iterdir()) == ["encryption.json"]


def test_v11_1_1_rotation_that_cannot_be_persisted_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, keys_dir: Path, master: MasterKey, encryption_keyring: Keyring
) -> None:
    """ASVS V11.1.1: a failed write leaves the keyring, in memory and on disk, as it was."""
    before_kids = encryption_keyring.kids()
    before_file = (keys_dir / "encryption.json").read_bytes()

    def fail(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyringError, match="cannot be written"):
        encryption_keyring.rotate()
    assert encryption_keyring.kids() == before_kids
    assert (keys_dir / "encryption.json").read_bytes() == before_file
    assert sorted(p.name for p in keys_dir.iterdir()) == ["encryption.json"]


def test_v13_3_1_wrong_master_key_is_a_keyring_error(keys_dir: Path, encryption_keyring: Keyring) -> None:
    """ASVS V13.3.1: another master key cannot unwrap; the message is one CLI-safe line."""
    with pytest.raises(KeyringError) as caught:
        Keyring.load(keys_dir, "encryption", MasterKey.generate())
    message = str(caught.value)
    assert message == f"{keys_dir / 'encryption.json'} cannot be decrypted with this master key"


def test_missing_keyring_is_a_keyring_error(keys_dir: Path, master: MasterKey) -> None:
    """A missing keyring file is reported, not silently created, by load()."""
    with pytest.raises(KeyringError, match="does not exist"):
        Keyring.load(keys_dir, "encryption", master)
    assert not keys_dir.exists()


def _edit(path: Path, change: Any) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda p: p.write_text(""), "is corrupt"),
        (lambda p: p.write_bytes(b"\xff\xfe{"), "is corrupt"),
        (lambda p: p.write_text("[]"), "is corrupt"),
        (lambda p: p.write_text('{"format": "bastion-keyring/v1"}'), "is corrupt"),
        (lambda p: _edit(p, lambda d: d.update(format="bastion-keyring/v9")), "is corrupt"),
        (lambda p: _edit(p, lambda d: d.update(purpose="hmac")), "is corrupt"),
        (lambda p: _edit(p, lambda d: d.update(keys=[])), "is corrupt"),
        (lambda p: _edit(p, lambda d: d.update(keys={})), "is corrupt"),
        (lambda p: _edit(p, lambda d: d["keys"].append(d["keys"][0])), "is corrupt"),
        (lambda p: _edit(p, lambda d: d["keys"][1].update(status="retired")), "is corrupt"),
        (lambda p: _edit(p, lambda d: d["keys"][0].update(status="active")), "is corrupt"),
        (lambda p: _edit(p, lambda d: d["keys"][0].update(status="revoked")), "is corrupt"),
        (lambda p: _edit(p, lambda d: d["keys"][0].update(created_at="yesterday")), "is corrupt"),
        (lambda p: _edit(p, lambda d: d["keys"][0].update(created_at="2025-01-01T00:00:00")), "is corrupt"),
        (lambda p: _edit(p, lambda d: d["keys"][0].update(kid=7)), "is corrupt"),
        (lambda p: _edit(p, lambda d: d["keys"][0].pop("wrapped")), "is corrupt"),
        (lambda p: _edit(p, lambda d: d["keys"][0].update(wrapped="AAAA")), "is corrupt"),
        (
            lambda p: _edit(p, lambda d: d["keys"][0].update(wrapped=d["keys"][0]["wrapped"][:-4])),
            "decrypted",
        ),
        (lambda p: _edit(p, lambda d: d["keys"][0].update(kid="AAAAAAAAAAA")), "decrypted"),
    ],
    ids=[
        "empty-file",
        "not-utf8",
        "json-list",
        "no-keys",
        "unknown-format",
        "other-purpose",
        "zero-keys",
        "keys-not-a-list",
        "duplicate-kid",
        "no-active-key",
        "two-active-keys",
        "unknown-status",
        "bad-created-at",
        "naive-created-at",
        "kid-not-a-string",
        "no-wrapped-key",
        "wrapped-too-short",
        "wrapped-truncated",
        "kid-renamed",
    ],
)
def test_v11_2_5_corrupt_keyring_is_a_keyring_error(
    keys_dir: Path, master: MasterKey, encryption_keyring: Keyring, corrupt: Any, message: str
) -> None:
    """ASVS V11.2.5: any damage to the keyring file fails closed with KeyringError."""
    encryption_keyring.rotate()
    corrupt(keys_dir / "encryption.json")
    with pytest.raises(KeyringError, match=message):
        Keyring.load(keys_dir, "encryption", master)


def test_v13_3_1_wrapped_keys_swapped_between_kids_fail(
    keys_dir: Path, master: MasterKey, encryption_keyring: Keyring
) -> None:
    """ASVS V13.3.1: the wrap AAD binds each key to its kid, so swapping wrapped keys fails."""
    encryption_keyring.rotate()

    def swap(document: dict[str, Any]) -> None:
        first, second = document["keys"]
        first["wrapped"], second["wrapped"] = second["wrapped"], first["wrapped"]

    _edit(keys_dir / "encryption.json", swap)
    with pytest.raises(KeyringError, match="cannot be decrypted"):
        Keyring.load(keys_dir, "encryption", master)


def test_v13_3_1_wrapped_key_copied_to_another_purpose_fails(
    keys_dir: Path, master: MasterKey, encryption_keyring: Keyring, hmac_keyring: Keyring
) -> None:
    """ASVS V13.3.1, V11.1.2: the wrap AAD binds the purpose, so an encryption key
    planted (with its kid) in the hmac keyring does not unwrap."""
    planted = json.loads((keys_dir / "encryption.json").read_text())["keys"][0]
    _edit(keys_dir / "hmac.json", lambda d: d["keys"][0].update(kid=planted["kid"], wrapped=planted["wrapped"]))
    with pytest.raises(KeyringError, match="cannot be decrypted"):
        Keyring.load(keys_dir, "hmac", master)


def test_v11_6_1_signing_material_is_an_ed25519_private_key(signing_keyring: Keyring) -> None:
    """ASVS V11.6.1: the "signing" purpose holds raw Ed25519 private keys (RFC 8032 seeds)."""
    seed = signing_keyring.secret(signing_keyring.active_kid)
    assert len(seed) == 32
    assert Ed25519PrivateKey.from_private_bytes(seed).private_bytes_raw() == seed


def test_v11_6_1_rs256_and_es256_material_is_pkcs8_der(keys_dir: Path, master: MasterKey) -> None:
    """ASVS V11.6.1: "signing-rs256" holds RSA-2048 and "signing-es256" P-256 private
    keys, stored as PKCS#8 DER (RFC 5958), and they survive a reload unchanged."""
    rsa_ring = Keyring.load_or_create(keys_dir, "signing-rs256", master)
    ec_ring = Keyring.load_or_create(keys_dir, "signing-es256", master)
    rsa_key = serialization.load_der_private_key(rsa_ring.secret(rsa_ring.active_kid), password=None)
    ec_key = serialization.load_der_private_key(ec_ring.secret(ec_ring.active_kid), password=None)
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    assert rsa_key.key_size == 2048
    assert rsa_key.public_key().public_numbers().e == 65537
    assert isinstance(ec_key, ec.EllipticCurvePrivateKey)
    assert isinstance(ec_key.curve, ec.SECP256R1)
    for ring in (rsa_ring, ec_ring):
        der = ring.secret(ring.active_kid)
        assert der.startswith(b"0\x82") or der.startswith(b"0\x81")  # a DER SEQUENCE
        assert Keyring.load(keys_dir, ring.purpose, master).secret(ring.active_kid) == der


@pytest.mark.parametrize(
    ("purpose", "planted"),
    [
        ("signing-rs256", lambda: bytes(32)),
        ("signing-rs256", lambda: _der(ec.generate_private_key(ec.SECP256R1()))),
        ("signing-rs256", lambda: _der(rsa.generate_private_key(public_exponent=65537, key_size=1024))),  # noqa: S505 - the weak key under test
        ("signing-es256", lambda: _der(ec.generate_private_key(ec.SECP384R1()))),
        ("signing-es256", lambda: _der(rsa.generate_private_key(public_exponent=65537, key_size=2048))),
        ("signing", lambda: bytes(31)),
        ("encryption", lambda: _der(ec.generate_private_key(ec.SECP256R1()))),
    ],
    ids=["rs256-random-bytes", "rs256-ec-key", "rs256-rsa-1024", "es256-p384", "es256-rsa", "ed-31-bytes", "aes-der"],
)
def test_v11_2_5_material_of_the_wrong_kind_is_refused(
    keys_dir: Path, master: MasterKey, purpose: str, planted: Any
) -> None:
    """ASVS V11.2.5, V11.6.1: each purpose's material is checked at load, so a key of
    another kind or size (correctly wrapped, as a bug or an operator could write it)
    fails closed instead of signing with a weak key."""
    ring = Keyring.load_or_create(keys_dir, purpose, master)
    ring._save([(ring.kids()[0], planted())], replace=True)
    with pytest.raises(KeyringError, match="corrupt"):
        Keyring.load(keys_dir, purpose, master)


def _der(key: Any) -> bytes:
    return bytes(
        key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def test_unknown_kid_is_a_keyring_error_that_does_not_echo_it(encryption_keyring: Keyring) -> None:
    """An attacker-chosen kid is refused without being copied into the message."""
    with pytest.raises(KeyringError) as caught:
        encryption_keyring.secret("../../etc/passwd\nforged log line")
    assert "passwd" not in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("purpose", ["", "../evil", "Encryption", "a/b", "x" * 33])
def test_purpose_must_be_a_safe_file_name(keys_dir: Path, master: MasterKey, purpose: str) -> None:
    """The purpose becomes a file name, so path tricks are refused."""
    with pytest.raises(ValueError, match="purpose"):
        Keyring.load_or_create(keys_dir, purpose, master)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_v13_3_2_owner_only_key_file_passes(tmp_path: Path, mode: int) -> None:
    """ASVS V13.3.2: owner-only key files have no problem."""
    path = tmp_path / "master.key"
    path.write_text("k")
    os.chmod(path, mode)
    assert check_key_file_permissions(path) is None


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644, 0o666])
def test_v13_3_2_key_file_open_to_group_or_others_is_a_problem(tmp_path: Path, mode: int) -> None:
    """ASVS V13.3.2: group/other access to a key file is reported in one line with the fix."""
    path = tmp_path / "master.key"
    path.write_text("k")
    os.chmod(path, mode)
    problem = check_key_file_permissions(path)
    assert problem is not None
    assert "\n" not in problem
    assert f"{mode:04o}" in problem
    assert "chmod 600" in problem


def test_missing_key_file_is_a_problem(tmp_path: Path) -> None:
    """A key file that cannot be checked is reported, not passed."""
    assert check_key_file_permissions(tmp_path / "absent.key") is not None
