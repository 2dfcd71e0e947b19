"""The records API from the owner's and from the attacker's side (issue 4, DESIGN.md §4)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from bastion.audit import Origin
from bastion.audit.models import AuditEvent
from bastion.data.errors import CollectionChangeRefused
from bastion.settings import CollectionSettings
from harness import DataHarness

NOTE = {"title": "Groceries", "body": "<p>milk</p>", "secret": "PIN 4711", "priority": 2}


async def events(data: DataHarness, tag: str) -> list[Any]:
    """The events tagged ``tag``, oldest first (rows with AuditEvent's columns)."""
    return await data.app.state.db.all(select(AuditEvent).where(AuditEvent.tag == tag).order_by(AuditEvent.id))


async def test_owner_creates_reads_updates_lists_and_deletes(data: DataHarness) -> None:
    note = await data.create(data.alice, "notes", NOTE)
    assert note["title"] == "Groceries"
    assert note["secret"] == "PIN 4711"
    assert set(note) == {"id", "owner", "created_at", "updated_at", "title", "body", "secret", "priority"}
    url = f"{data.records('notes')}/{note['id']}"
    read = await data.client.get(url, headers=data.bearer(data.alice))
    assert read.status_code == 200
    assert read.json() == note
    patched = await data.client.patch(url, json={"priority": 5, "body": None}, headers=data.bearer(data.alice))
    assert patched.status_code == 200, patched.text
    assert patched.json()["priority"] == 5
    assert patched.json()["body"] is None
    assert patched.json()["secret"] == "PIN 4711"
    listed = await data.client.get(data.records("notes"), headers=data.bearer(data.alice))
    assert [r["id"] for r in listed.json()["items"]] == [note["id"]]
    assert (await data.client.delete(url, headers=data.bearer(data.alice))).status_code == 204
    assert (await data.client.get(url, headers=data.bearer(data.alice))).status_code == 404
    assert [len(await events(data, f"data:record:{op}")) for op in ("create", "update", "delete")] == [1, 1, 1]


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_another_users_record_is_not_found_and_unchanged(data: DataHarness, method: str) -> None:
    """V8.2.2 (IDOR/BOLA): Bob gets the same 404 for Alice's record as for none, and changes nothing."""
    note = await data.create(data.alice, "notes", NOTE)
    url = f"{data.records('notes')}/{note['id']}"
    body = {"title": "pwned"} if method == "PATCH" else None
    theirs = await data.client.request(method, url, json=body, headers=data.bearer(data.bob))
    missing = await data.client.request(
        method, f"{data.records('notes')}/{'0' * 8}-0000-7000-8000-{'0' * 12}", json=body, headers=data.bearer(data.bob)
    )
    assert theirs.status_code == missing.status_code == 404
    assert {k: v for k, v in theirs.json().items() if k != "request_id"} == {
        k: v for k, v in missing.json().items() if k != "request_id"
    }
    assert (await data.client.get(url, headers=data.bearer(data.alice))).json() == note
    denied = await events(data, "data:record:denied")
    assert denied[0].details == {"collection": "notes", "operation": method_op(method), "record_id": note["id"]}
    assert denied[0].outcome == "denied"
    assert await events(data, "data:record:update") == []
    assert await events(data, "data:record:delete") == []


def method_op(method: str) -> str:
    return {"GET": "read", "PATCH": "update", "DELETE": "delete"}[method]


async def test_listing_shows_only_the_callers_records(data: DataHarness) -> None:
    """V8.2.2: the owner rule filters lists; no filter or sort reaches other users' rows."""
    await data.create(data.alice, "notes", NOTE)
    mine = await data.create(data.bob, "notes", {**NOTE, "title": "Bob's"})
    for query in ("", "?title.eq=Groceries", "?sort=-priority", "?priority.in=2&priority.in=3"):
        listed = await data.client.get(data.records("notes") + query, headers=data.bearer(data.bob))
        assert listed.status_code == 200, query
        assert [r["id"] for r in listed.json()["items"]] in ([mine["id"]], []), query


@pytest.mark.parametrize("field", ["id", "owner", "created_at", "updated_at", "unknown"])
async def test_server_owned_and_unknown_fields_are_refused(data: DataHarness, field: str) -> None:
    """V15.3.3 mass assignment: server-owned fields sent by a client are a 422 and never applied."""
    note = await data.create(data.alice, "notes", NOTE)
    values: dict[str, Any] = {
        "id": "00000000-0000-7000-8000-000000000000",
        "owner": note["owner"].replace(note["owner"][:8], "00000000"),
        "created_at": "2000-01-01T00:00:00Z",
        "updated_at": "2000-01-01T00:00:00Z",
        "unknown": 1,
    }
    created = await data.client.post(
        data.records("notes"), json={**NOTE, field: values[field]}, headers=data.bearer(data.bob)
    )
    assert created.status_code == 422
    assert created.json()["errors"][0]["pointer"] == f"/{field}"
    url = f"{data.records('notes')}/{note['id']}"
    patched = await data.client.patch(url, json={field: values[field]}, headers=data.bearer(data.alice))
    assert patched.status_code == 422
    assert (await data.client.get(url, headers=data.bearer(data.alice))).json() == note


@pytest.mark.parametrize(
    "body",
    [
        {"priority": 2},  # title is required
        {**NOTE, "title": None},
        {**NOTE, "title": "x" * 201},
        {**NOTE, "priority": 6},
        {**NOTE, "priority": "2"},  # strict: no coercion from text
        {**NOTE, "priority": 2.5},
        {**NOTE, "priority": True},
        {**NOTE, "title": "tab\there"},  # control characters
    ],
)
async def test_invalid_bodies_are_422_with_pointers_not_values(data: DataHarness, body: dict[str, Any]) -> None:
    """V2.2.1 positive validation against the declared type and bounds."""
    response = await data.client.post(data.records("notes"), json=body, headers=data.bearer(data.alice))
    assert response.status_code == 422
    assert all("pointer" in e for e in response.json()["errors"])
    assert "x" * 201 not in response.text


async def test_required_field_cannot_be_cleared(data: DataHarness) -> None:
    note = await data.create(data.alice, "notes", NOTE)
    url = f"{data.records('notes')}/{note['id']}"
    response = await data.client.patch(url, json={"title": None}, headers=data.bearer(data.alice))
    assert response.status_code == 422


async def test_anonymous_callers_get_401_and_are_audited(data: DataHarness) -> None:
    """V8.2.1: no rule passes without a credential (except public)."""
    note = await data.create(data.alice, "notes", NOTE)
    assert (await data.client.get(data.records("notes"))).status_code == 401
    assert (await data.client.get(f"{data.records('notes')}/{note['id']}")).status_code == 401
    assert (await data.client.post(data.records("notes"), json=NOTE)).status_code == 401
    assert len(await events(data, "data:record:denied")) == 3


async def test_rules_public_authenticated_role_and_unset(data: DataHarness) -> None:
    """V8.2.1: each operation follows its own rule, and an unset rule denies everyone."""
    post = await data.create(data.alice, "board", {"message": "hello"})
    url = f"{data.records('board')}/{post['id']}"
    assert (await data.client.get(url)).status_code == 200  # public read
    assert (await data.client.get(data.records("board"))).json()["items"][0]["message"] == "hello"
    assert (await data.client.post(data.records("board"), json={"message": "anon"})).status_code == 401
    # No update rule: not even the author may edit.
    assert (await data.client.patch(url, json={"message": "x"}, headers=data.bearer(data.alice))).status_code == 404
    # Delete needs role:admin.
    assert (await data.client.delete(url, headers=data.bearer(data.alice))).status_code == 404
    assert (await data.client.get(url)).status_code == 200


async def test_unknown_collection_is_404(data: DataHarness) -> None:
    response = await data.client.get("/api/v1/collections/users/records", headers=data.bearer(data.alice))
    assert response.status_code == 404


async def test_every_field_type_round_trips(data: DataHarness) -> None:
    note = await data.create(data.alice, "notes", NOTE)
    thing = {
        "name": "widget",
        "text": "line one\nline two",
        "html": "<p>hi <a href='https://example.com'>there</a></p>",
        "count": 3,
        "ratio": 0.5,
        "done": True,
        "due": "2026-03-01T12:00:00+01:00",
        "email": "someone@example.com",
        "link": "https://example.com/path",
        "colour": "red",
        "extra": {"a": [1, 2]},
        "note": note["id"],
        "ssn": "123-45-6789",
    }
    created = await data.create(data.alice, "things", thing)
    assert created["due"] == "2026-03-01T11:00:00+00:00"
    assert created["html"] == '<p>hi <a href="https://example.com" rel="noopener noreferrer nofollow">there</a></p>'
    assert {k: created[k] for k in ("count", "ratio", "done", "colour", "extra", "note", "ssn", "email", "link")} == {
        k: thing[k] for k in ("count", "ratio", "done", "colour", "extra", "note", "ssn", "email", "link")
    }
    for query, hits in [
        ("count.gte=3&count.lt=4", 1),
        ("ratio.gt=0.5", 0),
        ("done.eq=true", 1),
        ("due.lt=2026-03-01T11:00:01Z", 1),
        ("email.prefix=some", 1),
        ("colour.in=green", 0),
        (f"note.eq={note['id']}", 1),
        ("ssn.eq=123-45-6789", 1),
        ("ssn.eq=123-45-6780", 0),
        ("name.ne=widget", 0),
    ]:
        listed = await data.client.get(f"{data.records('things')}?{query}", headers=data.bearer(data.alice))
        assert listed.status_code == 200, (query, listed.text)
        assert len(listed.json()["items"]) == hits, query


async def test_relations_only_to_records_the_caller_can_read(data: DataHarness) -> None:
    """V8.2.2: a relation cannot point at (or probe for) another user's record."""
    alices = await data.create(data.alice, "notes", NOTE)
    response = await data.client.post(
        data.records("things"), json={"note": alices["id"]}, headers=data.bearer(data.bob)
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [{"pointer": "/note", "detail": "There is no such record."}]


async def test_deleting_a_target_clears_relations(data: DataHarness) -> None:
    note = await data.create(data.alice, "notes", NOTE)
    thing = await data.create(data.alice, "things", {"note": note["id"]})
    await data.client.delete(f"{data.records('notes')}/{note['id']}", headers=data.bearer(data.alice))
    again = await data.client.get(f"{data.records('things')}/{thing['id']}", headers=data.bearer(data.alice))
    assert again.json()["note"] is None


async def test_cursor_pagination_visits_every_record_once(data: DataHarness) -> None:
    created = [await data.create(data.alice, "notes", {**NOTE, "priority": 1 + i % 5}) for i in range(12)]
    for sort in ("id", "-id", "priority", "-priority"):
        seen: list[str] = []
        cursor = None
        while True:
            query = f"?limit=5&sort={sort}" + (f"&cursor={cursor}" if cursor else "")
            page = (await data.client.get(data.records("notes") + query, headers=data.bearer(data.alice))).json()
            seen += [r["id"] for r in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(r["id"] for r in created), sort
        priorities = [next(r["priority"] for r in created if r["id"] == i) for i in seen]
        if "priority" in sort:
            assert priorities == sorted(priorities, reverse=sort.startswith("-"))


@pytest.mark.parametrize(
    "query",
    [
        "limit=101",
        "limit=0",
        "sort=title",
        "title.lt=a",
        "body.eq=x",
        "secret.eq=x",
        "priority.eq=high",
        "cursor=!!",
        "limit=5&limit=6",
        "owner.eq=x",
    ],
)
async def test_undeclared_filters_and_sorts_are_422(data: DataHarness, query: str) -> None:
    """V2.2.1: only declared filterable fields, typed operators and indexed sorts exist."""
    response = await data.client.get(f"{data.records('notes')}?{query}", headers=data.bearer(data.alice))
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("body.eq=x", "The field body is not filterable in this collection."),
        ("title.lt=a", "The field title takes the operators eq, ne, in, prefix."),
        ("colour=red", "No such query parameter: besides limit, cursor and sort, filters are <field>.<operator>."),
        ("owner.eq=x", "No such query parameter: besides limit, cursor and sort, filters are <field>.<operator>."),
    ],
)
async def test_a_refused_filter_says_why(data: DataHarness, query: str, detail: str) -> None:
    """Not "Extra inputs are not permitted": the client learns which part of the filter does not exist."""
    response = await data.client.get(f"{data.records('notes')}?{query}", headers=data.bearer(data.alice))
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"detail": detail, "parameter": query.split("=", maxsplit=1)[0], "in": "query"}
    ]


async def test_admin_api_service_defines_changes_and_drops_a_collection(data: DataHarness) -> None:
    """The service the admin API calls: new collections serve at once; dropping data needs force."""
    service = data.app.state.data
    memo = CollectionSettings.model_validate(
        {"rules": {"create": "owner", "read": "owner"}, "fields": {"text": {"type": "text"}}}
    )
    plan = await service.define("memo", memo, origin=Origin.cli())
    assert [c.description for c in plan.changes] == ["create collection memo"]
    created = await data.create(data.alice, "memo", {"text": "hi"})
    assert (
        await data.client.get(f"{data.records('memo')}/{created['id']}", headers=data.bearer(data.bob))
    ).status_code == 404
    with pytest.raises(CollectionChangeRefused):
        await service.define("memo", None, origin=Origin.cli())
    with pytest.raises(CollectionChangeRefused):
        await service.define("notes", None, origin=Origin.cli(), force=True)  # declared in bastion.toml
    await service.define("memo", None, origin=Origin.cli(), force=True)
    assert (await data.client.get(data.records("memo"), headers=data.bearer(data.alice))).status_code == 404
    assert len(await events(data, "admin:collections:change")) == 3  # the harness's apply, create, drop
