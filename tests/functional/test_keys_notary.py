"""The notary keyring beside a serving app: `bastion keys rotate notary`, `keys list`,
`keys revoke notary KID` and `bastion keys export-public`, whose file lets a
verifier off the box check checkpoints signed before and after a rotation, and
holds no private key."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from typer.testing import CliRunner

from bastion.audit import EventTag
from bastion.audit.models import AuditEvent
from bastion.secrets import KEY_PURPOSES, checkpoint_origin, open_keyrings
from bastion.security import InvalidNote, checkpoint_body, parse_checkpoint, verify_note
from harness import Harness

pytestmark = pytest.mark.clock_now  # the command line dates its audit events by the real clock
runner = CliRunner()


async def bastion(harness: Harness, *args: str) -> tuple[int, str, str]:
    """The command, run beside the serving app (in a thread: it has its own event loop)."""
    from bastion.cli import app

    result = await asyncio.to_thread(runner.invoke, app, [*args, "--data-dir", str(harness.settings.data_dir)])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(autouse=True)
def _cli_database(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_DATABASE_URL", harness.settings.sqlalchemy_url)


def checkpoint(harness: Harness, size: int) -> tuple[str, str, str]:
    """A checkpoint signed with the active notary key, as the audit log signs one: (body, note, kid)."""
    origin = checkpoint_origin(harness.settings)
    body = checkpoint_body(origin, size, hashlib.sha256(str(size).encode()).digest())
    signed = open_keyrings(harness.settings).notary_signer().sign(body, origin)
    return body, signed.note, signed.kid


def encodings(secret: bytes) -> list[str]:
    """Every way key material could be spelled in a JSON file."""
    return [
        secret.hex(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
        base64.b64encode(b"\x01" + secret).decode(),  # Go's skey form
    ]


async def export(harness: Harness, path: Path) -> dict[str, object]:
    code, out, err = await bastion(harness, "keys", "export-public", "--out", str(path))
    assert code == 0, err
    assert str(path) in out
    document: dict[str, object] = json.loads(await asyncio.to_thread(path.read_text))
    return document


def vkeys(document: dict[str, object]) -> list[str]:
    notary = document["notary"]
    assert isinstance(notary, dict)
    return [key["vkey"] for key in notary["keys"]]


async def test_v13_3_4_export_public_verifies_checkpoints_across_a_rotation(harness: Harness, tmp_path: Path) -> None:
    """ASVS V13.3.4, V16.4.2: a checkpoint signed before `keys rotate notary` and one
    signed after both verify with only the exported file, through our verifier and
    through plain `cryptography` (raw key and PEM); the rotation is audited."""
    before_body, before_note, old_kid = checkpoint(harness, 10)
    code, out, err = await bastion(harness, "keys", "rotate", "notary")
    assert code == 0, err
    assert "new active notary key" in out
    assert "export-public" in out
    after_body, after_note, new_kid = checkpoint(harness, 20)
    assert new_kid != old_kid

    document = await export(harness, tmp_path / "public.json")
    assert document["format"] == "bastion-public-keys/v1"
    notary = document["notary"]
    assert isinstance(notary, dict)
    assert notary["origin"] == checkpoint_origin(harness.settings)
    assert [(k["kid"], k["status"]) for k in notary["keys"]] == [(old_kid, "retired"), (new_kid, "active")]
    assert verify_note(before_note, vkeys(document)) == before_body
    assert verify_note(after_note, vkeys(document)) == after_body
    assert parse_checkpoint(after_body)[1] == 20

    # A verifier with nothing but `cryptography` and the file.
    by_kid = {k["kid"]: k for k in notary["keys"]}
    for note, kid in ((before_note, old_kid), (after_note, new_kid)):
        text, _, signature_line = note.rpartition("\n\n")
        raw = base64.b64decode(signature_line.split(" ")[2])
        entry = by_kid[kid]
        Ed25519PublicKey.from_public_bytes(base64.b64decode(entry["public_key"])).verify(
            raw[4:], (text + "\n").encode()
        )
        pem_key = load_pem_public_key(entry["pem"].encode())
        assert isinstance(pem_key, Ed25519PublicKey)
        pem_key.verify(raw[4:], (text + "\n").encode())

    tags = [
        row.details
        for row in await harness.app.state.db.all(sa.select(AuditEvent).where(AuditEvent.tag == EventTag.KEY_ROTATE))
    ]
    assert [d["purpose"] for d in tags] == ["notary"]


async def test_v13_3_1_export_public_holds_no_private_material(harness: Harness, tmp_path: Path) -> None:
    """ASVS V13.3.1: nothing of any keyring's private material (notary seeds, Ed25519
    seeds, RSA and P-256 keys, encryption and HMAC keys) is in the exported file,
    in any spelling, and its JWKs carry no private member."""
    await bastion(harness, "keys", "rotate", "signing")
    document = await export(harness, tmp_path / "public.json")
    text = await asyncio.to_thread((tmp_path / "public.json").read_text)
    rings = open_keyrings(harness.settings)
    for purpose in KEY_PURPOSES:
        keyring = rings.purpose(purpose)
        for info in keyring.kids():
            if info.status == "revoked":
                continue
            for spelling in encodings(keyring.secret(info.kid)):
                assert spelling not in text, purpose
    assert "PRIVATE" not in text
    signing = document["signing"]
    assert isinstance(signing, dict)
    jwks = signing["jwks"]["keys"]
    assert {jwk["alg"] for jwk in jwks} == {"EdDSA", "RS256", "ES256"}
    assert len(jwks) == 6  # active and retired of each algorithm
    for jwk in jwks:
        assert not {"d", "p", "q", "dp", "dq", "qi", "oth", "k"} & set(jwk)
        assert jwk["key_ops"] == ["verify"]


async def test_revoked_notary_key_leaves_the_export_and_its_notes_stop_verifying(
    harness: Harness, tmp_path: Path
) -> None:
    """ASVS V13.3.4 (attack side): a leaked notary key is revoked; a checkpoint it
    signed (or an attacker signed with it) no longer verifies with the new export;
    `keys list` shows the notary keys and which one signs."""
    _, leaked_note, leaked = checkpoint(harness, 5)
    code, out, err = await bastion(harness, "keys", "revoke", "notary", leaked)
    assert code == 0, err
    assert f"revoked notary key {leaked}" in out
    assert "new active notary key" in out
    document = await export(harness, tmp_path / "public.json")
    notary = document["notary"]
    assert isinstance(notary, dict)
    assert leaked not in {k["kid"] for k in notary["keys"]}
    with pytest.raises(InvalidNote):
        verify_note(leaked_note, vkeys(document))
    body, note, _ = checkpoint(harness, 6)
    assert verify_note(note, vkeys(document)) == body

    code, listing, _ = await bastion(harness, "keys", "list")
    assert code == 0
    rows = [line for line in listing.splitlines() if "notary" in line]
    assert len(rows) == 2
    assert sum("revoked" in row for row in rows) == 1
    assert sum("active" in row and "signs notes" in row for row in rows) == 1


async def test_export_public_to_stdout_and_one_line_failures(harness: Harness, tmp_path: Path) -> None:
    code, out, err = await bastion(harness, "keys", "export-public")
    assert code == 0, err
    assert json.loads(out)["notary"]["keys"]
    code, _, err = await bastion(harness, "keys", "export-public", "--out", str(tmp_path / "missing" / "keys.json"))
    assert code != 0
    assert len(err.strip().splitlines()) == 1
    assert "cannot be written" in err
    code, _, err = await bastion(harness, "keys", "rotate", "hmac")
    assert code == 2
    assert "only encryption, signing and notary keys rotate" in err
    code, _, err = await bastion(harness, "keys", "revoke", "encryption", "x")
    assert code == 2
    assert "only signing and notary keys are revoked" in err
