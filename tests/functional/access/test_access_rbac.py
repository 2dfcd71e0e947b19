"""RBAC and API keys from the attacker's side: scenario tables of role x
route x status, scopes, escalation and mass assignment (OWASP API1, API3,
API5; ASVS V8.2.1, V8.2.2, V8.3.1, V15.3.3)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import Depends, FastAPI
from harness import PASSWORD, Harness
from sqlalchemy import select

from bastion.access import Principal, check_routes, require
from bastion.access.models import UserRole
from bastion.audit.models import AuditEvent
from bastion.identity.models import User
from bastion.security import totp_at

ADMIN, ALICE, BOB = "admin@example.com", "alice@example.com", "bob@example.com"


async def make_admin(harness: Harness) -> dict[str, str]:
    """An admin signed in with two factors."""
    await harness.register(ADMIN)
    async with harness.app.state.sessionmaker() as db:
        user = await db.scalar(select(User).where(User.email == ADMIN))
        assert user is not None
        user.roles = [UserRole(role="admin")]
        await db.commit()
    tokens = await harness.login(ADMIN)
    secret = (await harness.client.post("/api/v1/me/mfa/totp", headers=harness.bearer(tokens))).json()["secret"]
    step = int(harness.clock.now().timestamp()) // 30
    await harness.client.post(
        "/api/v1/me/mfa/totp/confirm", json={"code": totp_at(secret, step)}, headers=harness.bearer(tokens)
    )
    harness.clock.advance(seconds=30)
    challenge = await harness.login(ADMIN)
    body = {"mfa_token": challenge["mfa_token"], "code": totp_at(secret, step + 1)}
    return dict((await harness.client.post("/api/v1/auth/mfa", json=body)).json())


async def admin_password_only(harness: Harness) -> dict[str, str]:
    await harness.register("admin2@example.com")
    async with harness.app.state.sessionmaker() as db:
        user = await db.scalar(select(User).where(User.email == "admin2@example.com"))
        assert user is not None
        user.roles = [UserRole(role="admin")]
        await db.commit()
    return await harness.login("admin2@example.com")


ADMIN_ROUTES = [
    ("GET", "/admin/api/v1/users", None),
    ("GET", "/admin/api/v1/roles", None),
    ("PUT", "/admin/api/v1/roles/editor", {"permissions": ["records:*"], "description": "x"}),
    ("GET", "/admin/api/v1/api-keys", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
async def test_admin_api_scenario_table(
    harness: Harness, admin_client: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    """role x route x status on the admin listener: anonymous 401, user 403,
    admin without MFA 403, admin with MFA 200; and 404 on the public listener."""
    await harness.register(ALICE)
    cases = [
        ({}, 401),
        (harness.bearer(await harness.login(ALICE)), 403),
        (harness.bearer(await admin_password_only(harness)), 403),
        (harness.bearer(await make_admin(harness)), 200),
    ]
    for headers, status in cases:
        response = await admin_client.request(method, path, json=body, headers=headers)
        assert response.status_code == status, (headers, response.text)
        public = await harness.client.request(method, path, json=body, headers=headers)
        assert public.status_code == 404


async def test_denied_admin_access_is_audited_without_success_events(
    harness: Harness, admin_client: httpx.AsyncClient
) -> None:
    await harness.register(ALICE)
    alice = await harness.login(ALICE)
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
    await harness.register(ALICE)
    alice = await harness.login(ALICE)
    me = (await harness.client.get("/api/v1/me", headers=harness.bearer(alice))).json()
    attempt = await admin_client.patch(
        f"/admin/api/v1/users/{me['id']}", json={"roles": ["admin"]}, headers=harness.bearer(alice)
    )
    assert attempt.status_code == 403
    admin = await make_admin(harness)
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
    await harness.register(ALICE)
    alice = await harness.login(ALICE)
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
    assert (await harness.client.get("/api/v1/me", headers=as_key)).status_code == 200
    # Beyond its scopes: this key may not manage keys (403), whatever its owner may.
    assert (await harness.client.get("/api/v1/me/api-keys", headers=as_key)).status_code == 403
    tampered = key[:-2] + ("AA" if not key.endswith("AA") else "BB")
    assert (await harness.client.get("/api/v1/me", headers={"authorization": f"Bearer {tampered}"})).status_code == 401

    bob_key_id = created.json()["id"]
    await harness.register(BOB)
    bob = await harness.login(BOB)
    assert (
        await harness.client.delete(f"/api/v1/me/api-keys/{bob_key_id}", headers=harness.bearer(bob))
    ).status_code == 404
    assert (await harness.client.get("/api/v1/me", headers=as_key)).status_code == 200
    assert (
        await harness.client.delete(f"/api/v1/me/api-keys/{bob_key_id}", headers=harness.bearer(alice))
    ).status_code == 204
    assert (await harness.client.get("/api/v1/me", headers=as_key)).status_code == 401


async def test_api_key_expiry_and_owner_lock(harness: Harness) -> None:
    await harness.register(ALICE)
    alice = await harness.login(ALICE)
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
            json={"name": "soon", "scopes": ["records:*"], "expires_at": soon},
            headers=harness.bearer(alice),
        )
    ).json()["key"]
    as_key = {"authorization": f"Bearer {key}"}
    assert (await harness.client.get("/api/v1/me", headers=as_key)).status_code == 200
    harness.clock.advance(hours=1, seconds=1)
    assert (await harness.client.get("/api/v1/me", headers=as_key)).status_code == 401


async def test_app_refuses_to_start_with_an_unguarded_route(harness: Harness) -> None:
    """V8.1.x: anything not granted is denied, and a route that declares
    nothing does not start."""
    app = FastAPI()

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
    await harness.register(ALICE)
    alice = await harness.login(ALICE)

    @harness.app.get("/test/reports")
    async def reports(caller: Principal = Depends(require("reports:read"))) -> dict[str, str]:  # noqa: B008
        return {"ok": "yes"}

    assert (await harness.client.get("/test/reports", headers=harness.bearer(alice))).status_code == 403
    assert PASSWORD


async def test_admin_defines_collections_through_the_api(harness: Harness, admin_client: httpx.AsyncClient) -> None:
    """V8.2.2 (function level): only a two-factor admin changes the schema; data-dropping changes need force."""
    await harness.register(ALICE)
    alice = await harness.login(ALICE)
    admin = harness.bearer(await make_admin(harness))
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
    await harness.register(ALICE)
    alice = await harness.login(ALICE)
    response = await harness.client.post(
        "/api/v1/me/api-keys",
        json={"name": "k", "scopes": ["records:*"], "expires_at": expires_at},
        headers=harness.bearer(alice),
    )
    assert response.status_code == 422
