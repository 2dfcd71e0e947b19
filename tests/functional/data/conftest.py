"""Fixtures for the data tests: the identity harness with collections declared,
and two signed-in users, Alice and Bob."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.app import create_app
from bastion.clock import FrozenClock
from bastion.settings import Settings

sys.path.insert(0, str(Path(__file__).parent.parent / "identity"))
from harness import Harness

OWNER_ONLY = dict.fromkeys(("list", "read", "create", "update", "delete"), "owner")
COLLECTIONS: dict[str, Any] = {
    # The example `bastion init` writes.
    "notes": {
        "rules": OWNER_ONLY,
        "fields": {
            "title": {"type": "string", "max_length": 200, "required": True, "filterable": True},
            "body": {"type": "richtext"},
            "secret": {"type": "encrypted"},
            "priority": {"type": "integer", "min": 1, "max": 5, "filterable": True, "sortable": True},
        },
    },
    # One field of every type, most of them filterable.
    "things": {
        "rules": OWNER_ONLY,
        "fields": {
            "name": {"type": "string", "max_length": 50, "pattern": "^[A-Za-z0-9 <>/=\"'():;!-]*$", "filterable": True},
            "text": {"type": "text", "max_length": 1000},
            "html": {"type": "richtext"},
            "count": {"type": "integer", "min": 0, "max": 100, "filterable": True, "sortable": True},
            "ratio": {"type": "number", "min": 0, "max": 1, "filterable": True, "sortable": True},
            "done": {"type": "boolean", "filterable": True},
            "due": {"type": "datetime", "filterable": True, "sortable": True},
            "email": {"type": "email", "filterable": True},
            "link": {"type": "url", "filterable": True},
            "colour": {"type": "enum", "values": ["red", "green"], "filterable": True},
            "extra": {"type": "json", "max_bytes": 200, "max_depth": 3},
            "note": {"type": "relation", "collection": "notes", "filterable": True},
            "ssn": {"type": "encrypted", "searchable": True, "filterable": True},
        },
    },
    # A noticeboard: anyone reads, signed-in users post, only admins delete, nobody edits.
    "board": {
        "rules": {"list": "public", "read": "public", "create": "authenticated", "delete": "role:admin"},
        "fields": {"message": {"type": "string", "max_length": 100, "required": True}},
    },
}

ALICE, BOB = "alice@example.com", "bob@example.com"


class DataHarness(Harness):
    alice: dict[str, str]
    bob: dict[str, str]

    def records(self, collection: str) -> str:
        return f"/api/v1/collections/{collection}/records"

    async def create(self, who: dict[str, str], collection: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(self.records(collection), json=body, headers=self.bearer(who))
        assert response.status_code == 201, response.text
        return dict(response.json())


@pytest.fixture
async def data(make_settings: Callable[..., Settings]) -> AsyncIterator[DataHarness]:
    clock = FrozenClock()
    settings = make_settings(passwords={"memory_cost_kib": 7168, "time_cost": 1}, collections=COLLECTIONS)
    app = create_app(settings, clock=clock)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.40", 5000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="https://testserver") as client,
    ):
        harness = DataHarness(app, client, clock, settings)
        for address in (ALICE, BOB):
            await harness.register(address)
        harness.alice = await harness.login(ALICE)
        harness.bob = await harness.login(BOB)
        yield harness
