"""Per-user data keys (crypto-shredding): each owner's fields under their own
key, made once on first use even under concurrent writes, destroyed at once in
this process; and ``DataService.records_of_owner`` for the export."""

from __future__ import annotations

import asyncio
import uuid

import sqlalchemy as sa

from bastion.data.models import USER_KEYS
from bastion.db import transaction
from harness import DataHarness

PLANTED = "PLANTED-OWNED-5d1e"


def _owner(record: dict[str, object]) -> uuid.UUID:
    return uuid.UUID(str(record["owner"]))


async def _key_rows(data: DataHarness) -> list[uuid.UUID]:
    return [row.user_id for row in await data.app.state.db.all(sa.select(USER_KEYS.c.user_id))]


async def test_first_use_under_concurrency_makes_one_key_and_every_record_reads_back(data: DataHarness) -> None:
    """V11.3.3: twenty creates at once by a user who has no key yet agree on one key:
    one user_keys row, and every record decrypts with it."""
    bodies = [{"title": f"t{i}", "secret": f"{PLANTED}-{i}"} for i in range(20)]
    created = await asyncio.gather(*(data.create(data.alice, "notes", body) for body in bodies))
    alice = _owner(created[0])
    assert await _key_rows(data) == [alice]
    listed = await data.client.get(data.records("notes") + "?limit=100", headers=data.bearer(data.alice))
    assert listed.status_code == 200
    assert sorted(item["secret"] for item in listed.json()["items"]) == sorted(b["secret"] for b in bodies)


async def test_records_of_owner_gives_their_records_decrypted_and_nobody_elses(data: DataHarness) -> None:
    note = await data.create(data.alice, "notes", {"title": "mine", "secret": PLANTED})
    thing = await data.create(data.alice, "things", {"ssn": "123-45", "note": note["id"]})
    await data.create(data.bob, "notes", {"title": "bob's", "secret": "bob's secret"})
    found = await data.app.state.data.records_of_owner(_owner(note))
    assert sorted(found) == sorted(data.app.state.data.catalog.collections)  # every collection named
    assert found["notes"] == [note]
    assert found["things"] == [thing]
    assert found["board"] == []
    assert len(set(await _key_rows(data))) == 2


class _RollBack(Exception):
    pass


async def test_records_of_owner_reads_in_the_transaction_it_is_given(data: DataHarness) -> None:
    """The export reads the records in its own transaction: a change made in it (here an
    uncommitted delete) is what it sees, and once that rolls back the record is back."""
    note = await data.create(data.alice, "notes", {"title": "mine", "secret": PLANTED})
    service = data.app.state.data
    notes = service.catalog.collections["notes"].table
    try:
        async with transaction(data.app.state.db) as tx:
            await tx.execute(sa.delete(notes))
            assert (await service.records_of_owner(_owner(note), tx))["notes"] == []
            raise _RollBack
    except _RollBack:
        pass
    assert (await service.records_of_owner(_owner(note)))["notes"] == [note]


async def test_a_destroyed_key_stops_working_at_once_in_this_process(data: DataHarness) -> None:
    """V14.2.7, V14.2.2: after the key is destroyed, a cached copy opens nothing: the record's
    sealed field is refused (500, a tamper event), never served."""
    note = await data.create(data.alice, "notes", {"title": "mine", "secret": PLANTED})
    url = f"{data.records('notes')}/{note['id']}"
    assert (await data.client.get(url, headers=data.bearer(data.alice))).json()["secret"] == PLANTED  # cached now
    keys = data.app.state.data.sealer.user_keys
    async with transaction(data.app.state.db) as tx:
        assert await keys.destroy(tx, _owner(note))
    keys.forget(_owner(note))
    response = await data.client.get(url, headers=data.bearer(data.alice))
    assert response.status_code == 500
    assert PLANTED not in response.text
    assert await _key_rows(data) == []
