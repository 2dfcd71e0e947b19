"""Encrypted fields at rest, misplaced and tampered ciphertexts, and key rotation
with rewrap under concurrent reads."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid

import pytest
import sqlalchemy as sa

from bastion.audit.models import AuditEvent
from bastion.data.models import USER_KEYS
from bastion.db import transaction
from bastion.rewrap import rewrap_database
from bastion.secrets import open_keyrings
from bastion.security import Encryptor, is_data_key_blob
from harness import DataHarness

PLANTED = "PLANTED-PLAINTEXT-7f3a9c"


async def _blob(data: DataHarness, collection: str, record_id: str, field: str) -> bytes:
    table = data.app.state.data.catalog.collections[collection].table
    return bytes(await data.app.state.db.value(sa.select(table.c[field]).where(table.c.id == uuid.UUID(record_id))))


async def _set_blob(data: DataHarness, collection: str, record_id: str, field: str, blob: bytes) -> None:
    table = data.app.state.data.catalog.collections[collection].table
    async with transaction(data.app.state.db) as tx:
        await tx.execute(sa.update(table).where(table.c.id == uuid.UUID(record_id)).values({field: blob}))


async def test_plaintext_never_reaches_the_database(data: DataHarness) -> None:
    """V11.3.2 / V14.2.4: an encrypted field is AES-256-GCM ciphertext in the file or dump."""
    await data.create(data.alice, "notes", {"title": "visible-title-1b2c", "secret": PLANTED})
    await data.create(data.alice, "things", {"ssn": PLANTED})
    url = data.settings.database_url
    if url is None:
        # The main file and the write-ahead log: a value not yet checkpointed is in the log.
        stored = b"".join(p.read_bytes() for p in data.settings.data_dir.glob("bastion.db*"))
    else:
        pg_dump = shutil.which("pg_dump")
        assert pg_dump, "pg_dump is needed to check the dump"
        plain_url = url.get_secret_value().replace("postgresql+asyncpg", "postgresql")
        stored = subprocess.run([pg_dump, plain_url], capture_output=True, check=True).stdout  # noqa: ASYNC221 - a test
    assert b"visible-title-1b2c" in stored  # the scan does see stored text
    assert PLANTED.encode() not in stored


async def test_ciphertext_copied_to_another_record_or_field_is_refused(data: DataHarness) -> None:
    """V11.3.3: associated data binds a ciphertext to collection, field and record id."""
    source = await data.create(data.alice, "notes", {"title": "a", "secret": PLANTED})
    target = await data.create(data.alice, "notes", {"title": "b", "secret": "mine"})
    thing = await data.create(data.alice, "things", {"ssn": "mine"})
    blob = await _blob(data, "notes", source["id"], "secret")
    await _set_blob(data, "notes", target["id"], "secret", blob)
    await _set_blob(data, "things", thing["id"], "ssn", blob)
    for collection, record in (("notes", target), ("things", thing)):
        response = await data.client.get(f"{data.records(collection)}/{record['id']}", headers=data.bearer(data.alice))
        assert response.status_code == 500
        assert PLANTED not in response.text
    listed = await data.client.get(data.records("notes"), headers=data.bearer(data.alice))
    assert listed.status_code == 500
    assert PLANTED not in listed.text


@pytest.mark.parametrize("where", [0, 2, 20, -1])
async def test_tampered_ciphertext_is_refused_not_decrypted(data: DataHarness, where: int) -> None:
    """V11.3.3: GCM authentication fails for any flipped bit (header, nonce, body or tag)."""
    record = await data.create(data.alice, "notes", {"title": "a", "secret": PLANTED})
    blob = bytearray(await _blob(data, "notes", record["id"], "secret"))
    blob[where] ^= 0x01
    await _set_blob(data, "notes", record["id"], "secret", bytes(blob))
    response = await data.client.get(f"{data.records('notes')}/{record['id']}", headers=data.bearer(data.alice))
    assert response.status_code == 500
    assert response.json()["detail"].startswith("A stored value failed its integrity check")
    tags = [row.tag for row in await data.app.state.db.all(sa.select(AuditEvent.tag))]
    assert "data:record:tampered" in tags


async def _wrapped_kids(data: DataHarness, encryptor: Encryptor) -> list[str]:
    rows = await data.app.state.db.all(sa.select(USER_KEYS.c.wrapped).order_by(USER_KEYS.c.user_id))
    return [encryptor.key_id(bytes(row.wrapped)) for row in rows]


async def test_rotation_and_rewrap_under_concurrent_reads(data: DataHarness) -> None:
    """V11.2.2 / V13.3.4: records' fields are sealed with their owner's data key,
    which the keyring wraps; a rotation rewraps those keys (resumably, while
    reads go on with zero failures) and leaves the fields' blobs as they are."""
    owned = [
        (owner, await data.create(owner, "notes", {"title": f"n{i}", "secret": f"s{i}"}))
        for i in range(6)
        for owner in (data.alice, data.bob)
    ]
    records = [record for _, record in owned]
    cli_keys = open_keyrings(data.settings)  # the CLI's own view of the keystore
    old_kid = cli_keys.encryption.active_kid
    before = {r["id"]: await _blob(data, "notes", r["id"], "secret") for r in records}
    assert all(is_data_key_blob(blob) for blob in before.values())
    new_kid = cli_keys.encryption.rotate()
    encryptor = Encryptor(cli_keys.encryption)
    assert await _wrapped_kids(data, encryptor) == [old_kid, old_kid]

    failures: list[str] = []
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            for owner, record in owned:
                url = f"{data.records('notes')}/{record['id']}"
                response = await data.client.get(url, headers=data.bearer(owner))
                if response.status_code != 200 or response.json()["secret"] != record["secret"]:
                    failures.append(response.text)
            await asyncio.sleep(0)

    class Killed(Exception):
        pass

    def kill_after_first_batch(collection: str, done: int, total: int) -> None:
        if done > 0:
            raise Killed

    readers = [asyncio.create_task(reader()) for _ in range(3)]
    with pytest.raises(Killed):
        await rewrap_database(data.app.state.db, cli_keys, batch_size=1, report=kill_after_first_batch)
    left = (await _wrapped_kids(data, encryptor)).count(old_kid)
    resumed = await rewrap_database(data.app.state.db, cli_keys, batch_size=1, report=lambda *_: None)
    stop.set()
    await asyncio.gather(*readers)

    assert failures == []
    assert left == 1  # the first run's batch was committed before the kill
    assert resumed.rewrapped == left
    assert await _wrapped_kids(data, encryptor) == [new_kid, new_kid]
    assert {r["id"]: await _blob(data, "notes", r["id"], "secret") for r in records} == before
