"""Tests for bastion.security.notes: C2SP signed notes and tlog checkpoints.

Vectors: golang.org/x/mod ``sumdb/note/note_test.go`` (the PeterNeumann and
EnochRoot keys, their signatures of the same text, and the malformed notes
Go's ``note.Open`` refuses); the checkpoint example of C2SP
``tlog-checkpoint.md``. Ed25519 signatures are deterministic (RFC 8032), so
our signature of the Go text must be Go's, byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.security import Keyring, MasterKey
from bastion.security.notes import (
    InvalidNote,
    Notary,
    NoteKey,
    checkpoint_body,
    open_note,
    parse_checkpoint,
    sign_note,
    verify_note,
)

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
PETER_SEED = base64.b64decode(PETER_SKEY.split("+", 4)[4])[1:]


def test_go_vectors_sign_byte_for_byte() -> None:
    """V16.4.2: our note and vkey are Go sumdb/note's exactly."""
    assert sign_note(TEXT, "PeterNeumann", PETER_SEED) == TEXT + "\n" + PETER_SIG
    key = NoteKey.from_private("PeterNeumann", PETER_SEED)
    assert key.vkey() == PETER_VKEY
    assert key.key_hash == bytes.fromhex("c74f20a3")
    assert key.key_hash == hashlib.sha256(b"PeterNeumann\n\x01" + key.public_key).digest()[:4]
    assert NoteKey.from_vkey(PETER_VKEY) == key


def test_go_vectors_open() -> None:
    """V16.4.2: Go's two-signature note opens with either key; unknown keys are ignored."""
    note = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    opened = open_note(note, [PETER_VKEY])
    assert opened.body == TEXT
    assert [k.name for k in opened.signers] == ["PeterNeumann"]
    both = open_note(note.encode(), [PETER_VKEY, ENOCH_VKEY])
    assert [k.name for k in both.signers] == ["PeterNeumann", "EnochRoot"]
    assert verify_note(TEXT + "\n" + ENOCH_SIG, [NoteKey.from_vkey(ENOCH_VKEY)]) == TEXT
    # Duplicates of a good signature and an unknown key's garbage are fine.
    noisy = TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[60:]
    assert verify_note(noisy, [PETER_VKEY]) == TEXT


@pytest.mark.parametrize(
    "note",
    [
        TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:],  # invalid signature for a known key
        TEXT + "\n" + ENOCH_SIG,  # signed only by an unknown key
        TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "CarmenSandiego"),  # known key, other name
        TEXT + "\n" + PETER_SIG.replace("x08g", "xxxx"),  # known name, other key ID
        TEXT.replace("problem,", "problem;") + "\n" + PETER_SIG,  # altered text
        TEXT + "\n" + PETER_SIG * 101,  # too many signatures
        # Go's malformed notes:
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT
        + "\n"
        + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        # and a few more:
        TEXT + "\n" + "- PeterNeumann " + PETER_SIG.split(" ", 2)[2],  # ASCII hyphen, not an em dash
        TEXT + "\n" + PETER_SIG.replace("=\n", "\n"),  # unpadded base64
        TEXT + "\n" + "— PeterNeumann xw==\n",  # too short to hold a key ID and a signature
        TEXT + "\r\n" + PETER_SIG,
        "",
    ],
)
def test_forged_and_malformed_notes_are_refused(note: str) -> None:
    """V16.4.2 (attack side): every way a note can be bad raises the one InvalidNote."""
    with pytest.raises(InvalidNote):
        verify_note(note, [PETER_VKEY])


def test_invalid_utf8_is_refused() -> None:
    with pytest.raises(InvalidNote):
        verify_note(b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), [PETER_VKEY])


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",  # wrong key length
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown algorithm
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # hash does not match
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # Go prints lower case
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3",
        "",
        PETER_VKEY[:-1],
    ],
)
def test_bad_vkeys_are_refused(vkey: str) -> None:
    with pytest.raises(InvalidNote):
        NoteKey.from_vkey(vkey)
    with pytest.raises(InvalidNote):
        verify_note(TEXT + "\n" + PETER_SIG, [vkey])


def test_every_mangling_of_the_vkey_is_refused() -> None:
    """As Go's TestNewVerifier: each byte bumped by one makes a vkey that does not parse."""
    raw = bytearray(PETER_VKEY.encode())
    for i in range(len(raw)):
        raw[i] += 1
        with pytest.raises((InvalidNote, UnicodeDecodeError)):
            NoteKey.from_vkey(raw.decode())
        raw[i] -= 1


def test_c2sp_checkpoint_example_parses() -> None:
    """The checkpoint of C2SP tlog-checkpoint.md."""
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    origin, size, root = parse_checkpoint(body)
    assert (origin, size) == ("example.com/behind-the-sofa", 20852163)
    assert checkpoint_body(origin, size, root) == body
    assert parse_checkpoint(body + "extension line\n") == (origin, size, root)


@pytest.mark.parametrize(
    "body",
    [
        "origin\n1\n" + base64.b64encode(b"\0" * 32).decode(),  # no final newline
        "origin\n01\n" + base64.b64encode(b"\0" * 32).decode() + "\n",  # leading zero
        "origin\n-1\n" + base64.b64encode(b"\0" * 32).decode() + "\n",
        "origin\n+1\n" + base64.b64encode(b"\0" * 32).decode() + "\n",
        "origin\n\uff11\n" + base64.b64encode(b"\0" * 32).decode() + "\n",  # fullwidth digit
        "origin\n1\n" + base64.b64encode(b"\0" * 31).decode() + "\n",  # short root
        "origin\n1\n" + base64.urlsafe_b64encode(b"\xff" * 32).decode() + "\n",  # not standard base64
        "origin\n1\n" + base64.b64encode(b"\0" * 32).decode() + "\n\n",  # empty extension line
        "\n1\n" + base64.b64encode(b"\0" * 32).decode() + "\n",
        "origin\n1\n",
    ],
)
def test_malformed_checkpoints_are_refused(body: str) -> None:
    with pytest.raises(InvalidNote):
        parse_checkpoint(body)


def test_checkpoint_round_trip_with_a_fresh_key() -> None:
    """V16.4.2: sign a checkpoint under its origin; it verifies with the vkey and
    changing any of size, root or origin breaks it."""
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    origin = "bastion.example/audit"
    root = hashlib.sha256(b"root").digest()
    body = checkpoint_body(origin, 42, root)
    note = sign_note(body, origin, seed)
    vkey = NoteKey.from_private(origin, seed).vkey()
    assert parse_checkpoint(verify_note(note, [vkey])) == (origin, 42, root)
    for forged in (note.replace("\n42\n", "\n43\n"), note.replace(origin + "\n", "evil.example/audit\n", 1)):
        with pytest.raises(InvalidNote):
            verify_note(forged, [vkey])
    other = NoteKey.from_private(origin, Ed25519PrivateKey.generate().private_bytes_raw()).vkey()
    with pytest.raises(InvalidNote):
        verify_note(note, [other])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", 1, b"\0" * 32), "origin"),
        (("a\nb", 1, b"\0" * 32), "origin"),
        (("o", -1, b"\0" * 32), "size"),
        (("o", 1, b"\0" * 31), "root"),
    ],
)
def test_checkpoint_body_refuses_what_it_cannot_carry(args: tuple[str, int, bytes], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        checkpoint_body(*args)


def test_sign_note_refuses_bad_bodies_and_names() -> None:
    with pytest.raises(ValueError, match="newline"):
        sign_note("no newline", "name", PETER_SEED)
    with pytest.raises(ValueError, match="newline"):
        sign_note("tab\there\n", "name", PETER_SEED)
    for name in ("", "a b", "a+b", "a\u00a0b"):
        with pytest.raises(ValueError, match="name"):
            sign_note(TEXT, name, PETER_SEED)
    with pytest.raises(ValueError, match="32-byte"):
        sign_note(TEXT, "name", b"short")


def test_notary_signs_with_the_active_key_and_keeps_retired_ones(tmp_path: Path) -> None:
    """V16.4.2: a note signed before a rotation still verifies after it; a revoked
    key's notes do not; the Notary never hands out private material."""
    keyring = Keyring.load_or_create(tmp_path, "notary", MasterKey.generate())
    notary = Notary(keyring)
    origin = "bastion.example/audit"
    body = checkpoint_body(origin, 1, hashlib.sha256(b"x").digest())
    first = notary.sign(body, origin)
    assert first.kid == notary.active_kid
    keyring.rotate(at=datetime(2030, 1, 1, tzinfo=UTC))
    second = notary.sign(body, origin)
    assert second.kid != first.kid
    keys = notary.public_keys()
    assert [(k.kid, k.status) for k in keys] == [(first.kid, "retired"), (second.kid, "active")]
    assert all(len(k.public_key) == 32 for k in keys)
    assert "BEGIN PUBLIC KEY" in keys[0].public_pem()
    assert notary.verify(first.note, origin) == body
    assert notary.verify(second.note, origin) == body
    keyring.revoke(first.kid)
    assert [k.kid for k in notary.public_keys()] == [second.kid]
    with pytest.raises(InvalidNote):
        notary.verify(first.note, origin)
    # The other keyrings are refused.
    with pytest.raises(ValueError, match="notary"):
        Notary(Keyring.load_or_create(tmp_path, "hmac", MasterKey.generate()))
