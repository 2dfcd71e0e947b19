"""Collections and records: the collections the data tests declare, and
records made through the data service."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from bastion.identity.models import User
from factories import unit_of_work
from factories.access import principal_of

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


async def create_record(app: FastAPI, owner: User, collection: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A record ``owner`` creates (the collection's rules apply, as for the route); returns it as the API shows it."""
    caller = await principal_of(app, owner)
    async with unit_of_work(app) as uow:
        record: dict[str, Any] = await app.state.data.create(uow, collection, caller, json.dumps(fields).encode())
    return record
