"""RBAC and API keys from the attacker's side: scenario tables of role x
route x status, scopes, escalation and mass assignment (OWASP API1, API3,
API5; ASVS V8.2.1, V8.2.2, V8.3.1, V15.3.3)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import httpx
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import select, update

from bastion.access import Principal, check_routes, require
from bastion.access.models import ApiKey
from bastion.app import create_app
from bastion.audit.models import AuditEvent
from bastion.clock import FrozenClock
from bastion.db import transaction
from bastion.settings import Settings
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
    tags = [row.tag for row in await harness.app.state.db.all(select(AuditEvent.tag))]
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

    stored = await harness.app.state.db.value(select(ApiKey.secret_hash))
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
    # Told what an HTTP client can do, not a command-line flag.
    assert unforced.json()["detail"].endswith("repeat the request with ?force=true.")
    assert "--force" not in unforced.text
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


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def test_every_api_key_expires_within_the_maximum(harness: Harness) -> None:
    """V7.3.1-style bound on credential lifetime: no key lives forever, none past auth.api_key_max_days."""
    await harness.register(ALICE)
    alice = await harness.login(ALICE)
    now = harness.clock.now()

    async def create(**fields: object) -> httpx.Response:
        body = {"name": "k", "scopes": ["records:*"], **fields}
        return await harness.client.post("/api/v1/me/api-keys", json=body, headers=harness.bearer(alice))

    for too_late in (now + dt.timedelta(days=365, seconds=1), dt.datetime(9998, 12, 31, tzinfo=dt.UTC)):
        refused = await create(expires_at=_iso(too_late))
        assert refused.status_code == 422, too_late
        assert refused.json()["detail"] == "expires_at must be in the future and at most 365 days away."
    assert (await create(expires_at=_iso(now + dt.timedelta(days=365)))).status_code == 201

    # Without expires_at: the default lifetime, and the key stops working after it.
    default = await create()
    assert default.status_code == 201
    assert dt.datetime.fromisoformat(default.json()["expires_at"]) == now + dt.timedelta(days=90)
    as_key = {"authorization": f"Bearer {default.json()['key']}"}
    assert (await harness.client.get("/api/v1/collections/notes/records", headers=as_key)).status_code != 401
    harness.clock.advance(days=90, seconds=1)
    assert (await harness.client.get("/api/v1/collections/notes/records", headers=as_key)).status_code == 401


async def test_a_key_made_without_an_expiry_before_the_cap_still_expires(harness: Harness) -> None:
    await harness.register(ALICE)
    alice = await harness.login(ALICE)
    body = {"name": "legacy", "scopes": ["records:*"]}
    created = (await harness.client.post("/api/v1/me/api-keys", json=body, headers=harness.bearer(alice))).json()
    async with transaction(harness.app.state.db) as tx:  # as keys were stored before every key expired
        assert await tx.execute(update(ApiKey).where(ApiKey.id == created["id"]).values(expires_at=None)) == 1
    as_key = {"authorization": f"Bearer {created['key']}"}
    harness.clock.advance(days=364)
    assert (await harness.client.get("/api/v1/collections/notes/records", headers=as_key)).status_code != 401
    harness.clock.advance(days=1, seconds=1)
    assert (await harness.client.get("/api/v1/collections/notes/records", headers=as_key)).status_code == 401


async def test_api_key_lifetimes_are_settings(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        passwords={"memory_cost_kib": 7168, "time_cost": 1}, auth={"api_key_default_days": 7, "api_key_max_days": 30}
    )
    clock = FrozenClock()
    app = create_app(settings, clock=clock)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.31", 5000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="https://testserver") as client,
    ):
        harness = Harness(app, client, clock, settings)
        await harness.register(ALICE)
        alice = harness.bearer(await harness.login(ALICE))
        body = {"name": "k", "scopes": ["records:*"]}
        created = await client.post("/api/v1/me/api-keys", json=body, headers=alice)
        assert dt.datetime.fromisoformat(created.json()["expires_at"]) == clock.now() + dt.timedelta(days=7)
        late = {**body, "expires_at": _iso(clock.now() + dt.timedelta(days=31))}
        assert (await client.post("/api/v1/me/api-keys", json=late, headers=alice)).status_code == 422
