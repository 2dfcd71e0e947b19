"""The extension API: routes added to a built app inherit authentication,
permissions, rate limits, errors, headers and audit (examples/reports.py)."""

from __future__ import annotations

from examples import reports
from sqlalchemy import select

from bastion.access import check_routes
from bastion.audit.models import AuditEvent
from factories.access import grant
from harness import Harness

ALICE = "alice@example.com"


async def test_extension_routes_inherit_every_protection(harness: Harness) -> None:
    harness.app.include_router(reports.router)
    check_routes(harness.app)  # the example declares a requirement on every route
    alice = harness.bearer(await harness.signed_in(ALICE))

    anonymous = await harness.client.get("/api/v1/reports")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert anonymous.headers["x-content-type-options"] == "nosniff"
    assert (await harness.client.get("/api/v1/reports/health")).status_code == 200

    assert (await harness.client.get("/api/v1/reports", headers=alice)).status_code == 403
    assert "access:denied" in [row.tag for row in await harness.app.state.db.all(select(AuditEvent.tag))]
    await grant(harness.app, "user", "reports:read", "reports:write")

    assert (await harness.client.get("/api/v1/reports", headers=alice)).status_code == 200
    smuggled = await harness.client.post("/api/v1/reports", json={"title": "t", "author": "x"}, headers=alice)
    assert smuggled.status_code == 422
    malformed = await harness.client.post(
        "/api/v1/reports", content=b"{", headers={**alice, "content-type": "application/json"}
    )
    assert malformed.status_code == 400
    created = await harness.client.post("/api/v1/reports", json={"title": "Q3"}, headers=alice)
    assert created.status_code == 201
    assert "extension" in [row.tag for row in await harness.app.state.db.all(select(AuditEvent.tag))]

    statuses = [
        (await harness.client.post("/api/v1/reports", json={"title": "again"}, headers=alice)).status_code
        for _ in range(30)
    ]
    assert statuses[-1] == 429
