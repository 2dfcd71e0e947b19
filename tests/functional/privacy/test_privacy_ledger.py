"""The erasure ledger: signed lines that verify one by one, merged copies, and
its application to an instance (what a restore does) erasing exactly the users
it names while every other user's encrypted fields still read back."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from bastion.data.models import USER_KEYS
from bastion.db import open_database
from bastion.identity.models import User
from bastion.privacy.ledger import (
    LedgerInvalid,
    append_entry,
    apply_ledger,
    ledger_path,
    merge_ledgers,
    new_entry,
    read_ledger,
)
from bastion.privacy.removal import data_service_of
from bastion.secrets import checkpoint_origin, open_keyrings, public_keys_document
from bastion.settings import load_settings
from harness import PASSWORD, DataHarness

AT = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)


def test_each_line_verifies_alone_and_a_forged_or_changed_one_is_refused_by_number(data: DataHarness) -> None:
    """V11.3.3, V16.4.2: a ledger line's notary signature is checked against keys from
    outside the ledger (the keystore, or export-public's vkeys); an added or altered
    line is refused with its line number, so nobody can use the ledger to delete users."""
    keys = open_keyrings(data.settings)
    origin = checkpoint_origin(data.settings)
    lines = [new_entry(keys, origin, uuid.uuid4(), AT + dt.timedelta(minutes=i)).line for i in range(3)]
    ledger = ("\n".join(lines) + "\n").encode()
    assert [e.line for e in read_ledger(ledger, keys)] == lines
    vkeys = [key["vkey"] for key in public_keys_document(data.settings, keys)["notary"]["keys"]]
    assert len(read_ledger(ledger, vkeys)) == 3

    changed = json.loads(lines[1])
    changed["pseudonym"] = "00" * 32
    forged = [*lines[:1], json.dumps(changed), *lines[2:]]
    with pytest.raises(LedgerInvalid, match="line 2: the signature does not verify"):
        read_ledger("\n".join(forged).encode(), keys)
    with pytest.raises(LedgerInvalid, match="line 3: not JSON"):
        read_ledger(b"\n".join([lines[0].encode(), b"", b"{nope"]), keys)
    keys.notary.rotate()  # a retired notary key still verifies what it signed
    assert len(read_ledger(ledger, open_keyrings(data.settings))) == 3


def test_merge_is_a_union_oldest_first_and_idempotent(data: DataHarness) -> None:
    keys = open_keyrings(data.settings)
    origin = checkpoint_origin(data.settings)
    a, b, c = (new_entry(keys, origin, uuid.uuid4(), AT + dt.timedelta(minutes=i)).line for i in range(3))
    merged = merge_ledgers(f"{c}\n{a}\n", f"{b}\n{a}\n".encode())
    assert merged == f"{a}\n{b}\n{c}\n".encode()
    assert merge_ledgers(merged, merged) == merged
    assert merge_ledgers() == b""
    with pytest.raises(LedgerInvalid, match="of ledger 2"):
        merge_ledgers(merged, b"garbage\n")


async def test_applying_the_ledger_erases_the_named_users_only(data: DataHarness) -> None:
    """V14.2.7: what a restore does: the users the ledger names lose their key, records and account,
    even when the "hmac" keyring was rotated after the entry; everyone else reads back."""
    alice_note = await data.create(data.alice, "notes", {"title": "a", "secret": "alice's"})
    bob_note = await data.create(data.bob, "notes", {"title": "b", "secret": "bob's"})
    alice = uuid.UUID(alice_note["owner"])
    keys = open_keyrings(data.settings)
    append_entry(data.settings, keys, alice, AT)
    assert ledger_path(data.settings).stat().st_mode & 0o777 == 0o600
    entries = read_ledger(ledger_path(data.settings).read_bytes(), keys)
    keys.hmac.rotate()  # an entry made under a key now retired still matches

    assert await apply_ledger(data.settings, entries) == 1
    assert await apply_ledger(data.settings, entries) == 0  # already gone
    db = data.app.state.db
    assert await db.value(sa.select(sa.func.count()).select_from(User).where(User.id == alice)) == 0
    assert await db.value(sa.select(sa.func.count()).select_from(USER_KEYS).where(USER_KEYS.c.user_id == alice)) == 0
    notes = data.app.state.data.catalog.collections["notes"].table
    assert await db.value(sa.select(sa.func.count()).select_from(notes).where(notes.c.owner == alice)) == 0
    read = await data.client.get(f"{data.records('notes')}/{bob_note['id']}", headers=data.bearer(data.bob))
    assert read.status_code == 200
    assert read.json()["secret"] == "bob's"


async def test_a_copy_taken_before_the_erasure_serves_nothing_of_the_user_once_the_ledger_is_applied(
    data: DataHarness, tmp_path: Path
) -> None:
    """V14.2.7: the issue's case, with a file copy standing in for the backup (``backup restore``
    calls the same ``apply_ledger``): erase Alice, bring back a copy of the instance made
    before, apply the ledger: Alice's records and account are gone from it, and Bob's
    encrypted fields read back."""
    if data.settings.database_url is not None:
        pytest.skip("the copy is a SQLite file copy; backup restore on PostgreSQL is the backups' test")
    await data.create(data.alice, "notes", {"title": "a", "secret": "alice's secret"})
    await data.create(data.bob, "notes", {"title": "b", "secret": "bob's secret"})
    alice = uuid.UUID((await data.client.get("/api/v1/me", headers=data.bearer(data.alice))).json()["id"])
    bob = uuid.UUID((await data.client.get("/api/v1/me", headers=data.bearer(data.bob))).json()["id"])
    copy = tmp_path / "restored"
    shutil.copytree(data.settings.data_dir, copy, ignore=shutil.ignore_patterns("bastion.db*"))
    with sqlite3.connect(data.settings.data_dir / "bastion.db") as live, sqlite3.connect(copy / "bastion.db") as old:
        live.backup(old)  # a consistent copy, as an online backup would take

    response = await data.client.request(
        "DELETE", "/api/v1/me", json={"password": PASSWORD}, headers=data.bearer(data.alice)
    )
    assert response.status_code == 204
    restored = load_settings(copy)
    keys = open_keyrings(restored)
    db = open_database(restored.sqlalchemy_url)
    try:
        before = data_service_of(keys, db)
        assert [r["secret"] for r in (await before.records_of_owner(alice))["notes"]] == ["alice's secret"]
        entries = read_ledger(ledger_path(data.settings).read_bytes(), keys)
        assert await apply_ledger(restored, entries) == 1
        after = data_service_of(keys, db)
        assert all(not records for records in (await after.records_of_owner(alice)).values())
        assert await db.value(sa.select(sa.func.count()).select_from(User).where(User.id == alice)) == 0
        assert [r["secret"] for r in (await after.records_of_owner(bob))["notes"]] == ["bob's secret"]
    finally:
        await db.close()
