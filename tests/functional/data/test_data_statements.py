"""The records' statements on the data layer: built once per list shape, bounded
by the statement budget, and the admin API's answers about collections."""

from __future__ import annotations

import uuid

import httpx
import pytest

from bastion.audit import Origin
from bastion.data.errors import CollectionNotFound
from bastion.data.schema import ListShape, new_record_id
from bastion.data.service import DataService
from bastion.db import transaction
from bastion.db.sqlite import SqliteDatabase
from bastion.security import token_bytes
from bastion.settings import CollectionSettings
from harness import DataHarness


async def _seed_notes(data: DataHarness, owner: str, count: int, title: str) -> None:
    """``count`` notes of ``owner`` written straight to the table, as the API would store them."""
    collection = data.app.state.data.catalog.collections["notes"]
    now = data.clock.now()
    rows = [
        {
            "id": new_record_id(int(now.timestamp() * 1000), token_bytes(10)),
            "owner": uuid.UUID(owner),
            "created_at": now,
            "updated_at": now,
            "title": title,
            "body": None,
            "secret": None,
            "priority": 1,
        }
        for _ in range(count)
    ]
    async with transaction(data.app.state.db) as tx:
        await tx.execute_many(collection.insert, rows)


async def test_a_statement_over_its_budget_is_refused_and_the_worker_keeps_serving(data: DataHarness) -> None:
    """Issue 12: a hostile filter (one that scans every row and matches none) is stopped
    by the statement budget with a 503; the next requests are served as usual."""
    db = data.app.state.db
    if not isinstance(db, SqliteDatabase):
        pytest.skip("PostgreSQL's budget is the pool's statement_timeout, fixed when the pool opens")
    mine = await data.create(data.alice, "notes", {"title": "same"})
    await _seed_notes(data, mine["owner"], 3000, "same")
    hostile = f"{data.records('notes')}?title.ne=same"
    cheap = f"{data.records('notes')}?limit=1"
    headers = data.bearer(data.alice)
    budget = db.budget
    db.budget = 0.0  # test-only: every statement that runs more than a few thousand steps is stopped
    try:
        # Signing in and a short list fit in the tiny budget, so what is refused below is the scan.
        assert (await data.client.get(cheap, headers=headers)).status_code == 200
        refused = await data.client.get(hostile, headers=headers)
        assert refused.status_code == 503, refused.text
        assert (await data.client.get(cheap, headers=headers)).status_code == 200
    finally:
        db.budget = budget
    served = await data.client.get(hostile, headers=headers)
    assert served.status_code == 200
    assert served.json()["items"] == []
    read = await data.client.get(f"{data.records('notes')}/{mine['id']}", headers=headers)
    assert read.status_code == 200


async def test_a_list_statement_is_built_once_per_shape(data: DataHarness) -> None:
    """Different values of one shape reuse its statement; `in` values are padded, so
    3 and 4 values are one shape, and the padding changes no answer."""
    for priority in range(1, 6):
        await data.create(data.alice, "notes", {"title": f"p{priority}", "priority": priority})
    collection = data.app.state.data.catalog.collections["notes"]
    collection._lists.clear()
    headers = data.bearer(data.alice)
    for priority in (1, 2, 3):
        listed = await data.client.get(f"{data.records('notes')}?priority.eq={priority}", headers=headers)
        assert [r["title"] for r in listed.json()["items"]] == [f"p{priority}"]
    three = await data.client.get(
        f"{data.records('notes')}?priority.in=1&priority.in=2&priority.in=3&sort=priority", headers=headers
    )
    four = await data.client.get(
        f"{data.records('notes')}?priority.in=4&priority.in=5&priority.in=1&priority.in=2&sort=priority",
        headers=headers,
    )
    assert [r["title"] for r in three.json()["items"]] == ["p1", "p2", "p3"]
    assert [r["title"] for r in four.json()["items"]] == ["p1", "p2", "p4", "p5"]
    assert set(collection._lists) == {
        ListShape(own=True, filters=(("priority", "eq", 1),), sort="id", cursor=None),
        ListShape(own=True, filters=(("priority", "in", 4),), sort="priority", cursor=None),
    }


async def test_deleting_an_unknown_collection_is_404(data: DataHarness, admin_client: httpx.AsyncClient) -> None:
    admin = data.bearer(await data.admin())
    response = await admin_client.delete("/admin/api/v1/collections/nothing_here?force=true", headers=admin)
    assert response.status_code == 404
    with pytest.raises(CollectionNotFound):
        await data.app.state.data.define("nothing_here", None, origin=Origin.cli(), force=True)


async def test_a_json_value_beyond_64_bits_is_answered_as_stored(data: DataHarness) -> None:
    """Responses are encoded by orjson, which refuses such integers; the standard library takes over."""
    big = 2**70
    created = await data.create(data.alice, "things", {"extra": {"n": big}})
    assert created["extra"] == {"n": big}
    read = await data.client.get(f"{data.records('things')}/{created['id']}", headers=data.bearer(data.alice))
    assert read.status_code == 200
    assert read.json()["extra"] == {"n": big}


async def test_the_catalog_is_rebuilt_only_when_the_applied_definitions_change(data: DataHarness) -> None:
    """The once-a-second look is one select; the same definitions keep the same catalog
    (and its statements), a change made elsewhere builds a new one."""
    service = data.app.state.data
    catalog = service.catalog
    await service.refresh()
    assert service.catalog is catalog
    other = DataService(clock=data.clock, db=data.app.state.db, sealer=service.sealer)  # another instance
    memo = CollectionSettings.model_validate({"rules": {"read": "owner"}, "fields": {"text": {"type": "text"}}})
    await other.define("memo", memo, origin=Origin.cli())
    await service.refresh()
    assert service.catalog is not catalog
    assert service.catalog.version == catalog.version + 1
    assert "memo" in service.catalog.collections
