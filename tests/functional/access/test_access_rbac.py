"""RBAC and API keys from the attacker's side: scenario tables of role x
route x status, scopes, escalation and mass assignment (OWASP API1, API3,
API5; ASVS V8.2.1, V8.2.2, V8.3.1, V15.3.3)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import select

from bastion.access import Principal, check_routes, require
from bastion.audit.models import AuditEvent
from harness import Harness

ALICE, BOB = "alice@example.com", "bob@example.com"

ADMIN_ROUTES = [
    ("GET", "/admin/api/v1/users", None),
    ("GET", "/admin/api/v1/roles", None),
    ("PUT", "/admin/api/v1/roles/editor", {"permissions": ["records:*"], "description": "x"}),
    ("GET", "/admin/api/v1/api-keys", None),
]


async def test_a_two_factor_admin_is_served_by_the_admin_api(harness: Harness, admin_client: httpx.AsyncClient) -> None:
    """V8.2.1: the admin with MFA gets 200, not merely "not refused". Who is
    refused, on every admin route, is the scenario table's
    (test_access_scenarios.py)."""
    admin = harness.bearer(await harness.admin())
    for method, path, body in ADMIN_ROUTES:
        response = await admin_client.request(method, path, json=body, headers=admin)
        assert response.status_code == 200, (path, response.text)


async def test_denied_admin_access_is_audited_without_success_events(
    harness: Harness, admin_client: httpx.AsyncClient
) -> None:
    alice = await harness.signed_in(ALICE)
    response = await admin_client.put(
        "/admin/api/v1/roles/user", json={"permissions": ["*"]}, headers=harness.bearer(alice)
    )
    assert response.status_code == 403
    async with harness.app.state.sessionmaker() as db:
        tags = list(await db.scalars(select(AuditEvent.tag)))
    assert "access:denied" in tags
    assert "admin:role:change" not in tags


async def test_escalation_through_admin_api_by_mass_assignment(
    harness: Harness, admin_client: httpx.AsyncClient
) -> None:
    """A user cannot grant themselves roles; the admin PATCH body refuses unknown fields."""
    alice = await harness.signed_in(ALICE)
    me = (await harness.client.get("/api/v1/me", headers=harness.bearer(alice))).json()
    attempt = await admin_client.patch(
        f"/admin/api/v1/users/{me['id']}", json={"roles": ["admin"]}, headers=harness.bearer(alice)
    )
    assert attempt.status_code == 403
    admin = await harness.admin()
    smuggled = await admin_client.patch(
        f"/admin/api/v1/users/{me['id']}",
        json={"roles": ["user"], "email": "x@evil.example", "id": "0"},
        headers=harness.bearer(admin),
    )
    assert smuggled.status_code == 422
    assert (await harness.client.get("/api/v1/me", headers=harness.bearer(alice))).json()["roles"] == ["user"]
    promoted = await admin_client.patch(
        f"/admin/api/v1/users/{me['id']}", json={"roles": ["admin"]}, headers=harness.bearer(admin)
    )
    assert promoted.status_code == 200
    assert promoted.json()["roles"] == ["admin"]


async def test_api_key_lifecycle_scopes_and_revocation(harness: Harness) -> None:
    """V8.2.1 scopes ⊆ owner; the secret shown once and stored hashed; revocation at once."""
    alice = await harness.signed_in(ALICE)
    too_much = await harness.client.post(
        "/api/v1/me/api-keys", json={"name": "ci", "scopes": ["admin:users:read"]}, headers=harness.bearer(alice)
    )
    assert too_much.status_code == 422
    created = await harness.client.post(
        "/api/v1/me/api-keys", json={"name": "ci", "scopes": ["records:notes:read"]}, headers=harness.bearer(alice)
    )
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith(f"bsk_{created.json()['id']}_")
    listed = (await harness.client.get("/api/v1/me/api-keys", headers=harness.bearer(alice))).json()
    assert [k["id"] for k in listed] == [created.json()["id"]]
    assert "key" not in listed[0]
    from bastion.access.models import ApiKey

    async with harness.app.state.sessionmaker() as db:
        stored = await db.scalar(select(ApiKey.secret_hash))
    assert stored is not None
    assert key.split("_", 2)[2] not in stored

    as_key = {"authorization": f"Bearer {key}"}
    # A valid key (403: authenticated, but a records key may not read the account; 401 once revoked).
    assert (await harness.client.get("/api/v1/me", headers=as_key)).status_code == 403
    # Beyond its scopes: this key may not manage keys (403), whatever its owner may.
    assert (await harness.client.get("/api/v1/me/api-keys", headers=as_key)).status_code == 403
    tampered = key[:-2] + ("AA" if not key.endswith("AA") else "BB")
    assert (await harness.client.get("/api/v1/me", headers={"authorization": f"Bearer {tampered}"})).status_code == 401

    bob_key_id = created.json()["id"]
    bob = await harness.signed_in(BOB)
    assert (
        await harness.client.delete(f"/api/v1/me/api-keys/{bob_key_id}", headers=harness.bearer(bob))
    ).status_code == 404
    assert (await harness.client.get("/api/v1/me", headers=as_key)).status_code == 403
    assert (
        await harness.client.delete(f"/api/v1/me/api-keys/{bob_key_id}", headers=harness.bearer(alice))
    ).status_code == 204
    assert (await harness.client.get("/api/v1/me", headers=as_key)).status_code == 401


async def test_api_key_expiry_and_owner_lock(harness: Harness) -> None:
    alice = await harness.signed_in(ALICE)
    expires = (harness.clock.now().replace(microsecond=0)).isoformat().replace("+00:00", "Z")
    past = await harness.client.post(
        "/api/v1/me/api-keys",
        json={"name": "old", "scopes": ["records:*"], "expires_at": expires},
        headers=harness.bearer(alice),
    )
    assert past.status_code == 422
    harness.clock.advance(hours=1)
    soon = (harness.clock.now()).isoformat()
    harness.clock.advance(hours=-1)
    key = (
        await harness.client.post(
            "/api/v1/me/api-keys",
            json={"name": "soon", "scopes": ["records:*", "me:read"], "expires_at": soon},
            headers=harness.bearer(alice),
        )
    ).json()["key"]
    as_key = {"authorization": f"Bearer {key}"}
    assert (await harness.client.get("/api/v1/me", headers=as_key)).status_code == 200
    harness.clock.advance(hours=1, seconds=1)
    assert (await harness.client.get("/api/v1/me", headers=as_key)).status_code == 401


async def test_app_refuses_to_start_with_an_unguarded_route(harness: Harness) -> None:
    """V8.1.x: anything not granted is denied, and a route that declares
    nothing does not start (FastAPI's own documentation routes, which declare
    nothing either, are switched off here)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/open")
    async def open_route() -> dict[str, str]:
        return {}

    with pytest.raises(RuntimeError, match="GET /open"):
        check_routes(app)

    @app.get("/guarded")
    async def guarded(caller: Principal = Depends(require("x:y"))) -> dict[str, str]:  # noqa: B008
        return {}

    app.router.routes = [r for r in app.router.routes if getattr(r, "path", "") != "/open"]
    check_routes(app)


async def test_unknown_permission_is_denied_by_default(harness: Harness) -> None:
    alice = await harness.signed_in(ALICE)

    @harness.app.get("/test/reports")
    async def reports(caller: Principal = Depends(require("reports:read"))) -> dict[str, str]:  # noqa: B008
        return {"ok": "yes"}

    assert (await harness.client.get("/test/reports", headers=harness.bearer(alice))).status_code == 403


async def test_admin_defines_collections_through_the_api(harness: Harness, admin_client: httpx.AsyncClient) -> None:
    """V8.2.2 (function level): only a two-factor admin changes the schema; data-dropping changes need force."""
    alice = await harness.signed_in(ALICE)
    admin = harness.bearer(await harness.admin())
    tasks = {"fields": {"label": {"type": "string", "max_length": 50}}, "rules": {"create": "owner", "read": "owner"}}
    denied = await admin_client.put("/admin/api/v1/collections/tasks", json=tasks, headers=harness.bearer(alice))
    assert denied.status_code == 403
    created = await admin_client.put("/admin/api/v1/collections/tasks", json=tasks, headers=admin)
    assert created.status_code == 200, created.text
    assert created.json()["changes"]
    assert "tasks" in (await admin_client.get("/admin/api/v1/collections", headers=admin)).json()
    record = await harness.client.post(
        "/api/v1/collections/tasks/records", json={"label": "ship it"}, headers=harness.bearer(alice)
    )
    assert record.status_code == 201, record.text

    unforced = await admin_client.delete("/admin/api/v1/collections/tasks", headers=admin)
    assert unforced.status_code == 409
    assert (await admin_client.delete("/admin/api/v1/collections/tasks?force=true", headers=admin)).status_code == 200
    gone = await harness.client.get("/api/v1/collections/tasks/records", headers=harness.bearer(alice))
    assert gone.status_code == 404


@pytest.mark.parametrize("expires_at", ["9999-12-31T23:59:00-01:00", "2030-01-01T00:00:00"])
async def test_api_key_expiry_must_be_a_storable_aware_time(harness: Harness, expires_at: str) -> None:
    """V2.2.1: no timezone, or no UTC form, is a 422 rather than a 500."""
    alice = await harness.signed_in(ALICE)
    response = await harness.client.post(
        "/api/v1/me/api-keys",
        json={"name": "k", "scopes": ["records:*"], "expires_at": expires_at},
        headers=harness.bearer(alice),
    )
    assert response.status_code == 422
