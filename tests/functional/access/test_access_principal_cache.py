"""Remembered principals are forgotten at the first change that concerns
them: on this instance, on another instance of the same database, and when
the change comes from outside Bastion's code (another process's SQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import delete, insert, update

from bastion.access.models import ApiKey, UserRole
from bastion.access.service import AccessService
from bastion.db import open_database, transaction
from bastion.sessions.models import Session
from factories.access import create_api_key
from harness import Harness, open_harness

ME = "/api/v1/me"


@asynccontextmanager
async def another_instance(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    """A second app on the same database, as a second server (or worker) would be."""
    async with open_harness(harness.settings, harness.clock) as other:
        yield other.client


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How often a principal is looked up in the database rather than remembered."""
    calls: list[int] = []
    original = AccessService._session_principal

    async def looked_up(self: AccessService, *args: object) -> object:
        calls.append(1)
        return await original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(AccessService, "_session_principal", looked_up)
    return calls


async def test_a_principal_is_remembered_until_a_change_concerns_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = counting(monkeypatch)
    alice = harness.bearer(await harness.signed_in("alice@example.com"))
    for _ in range(5):
        assert (await harness.client.get(ME, headers=alice)).status_code == 200
    assert len(lookups) == 1
    await harness.signed_in("bob@example.com")  # a new session is no change to Alice's
    assert (await harness.client.get(ME, headers=alice)).status_code == 200
    assert len(lookups) == 1


async def test_v7_4_1_a_revoked_session_is_refused_at_its_next_request_on_every_instance(harness: Harness) -> None:
    tokens = await harness.signed_in("alice@example.com")
    alice = harness.bearer(tokens)
    async with another_instance(harness) as other:
        assert (await harness.client.get(ME, headers=alice)).status_code == 200
        assert (await other.get(ME, headers=alice)).status_code == 200  # both remember it now
        assert (await other.post("/api/v1/auth/logout", headers=alice)).status_code == 204
        assert (await harness.client.get(ME, headers=alice)).status_code == 401
        assert (await other.get(ME, headers=alice)).status_code == 401


async def test_v8_2_1_a_role_withdrawn_by_another_process_is_seen_at_the_next_request(harness: Harness) -> None:
    """The change comes from outside Bastion's services (here: SQL on another
    connection, as an operator's script or another process would): the
    database's triggers still tell every instance."""
    admin = harness.bearer(await harness.admin(mfa=True))
    assert (await harness.admin_client.get("/admin/api/v1/users", headers=admin)).status_code == 200  # type: ignore[union-attr]
    outsider = open_database(harness.settings.sqlalchemy_url)
    try:
        async with transaction(outsider) as tx:
            await tx.execute(delete(UserRole).where(UserRole.role == "admin"))
    finally:
        await outsider.close()
    assert (await harness.admin_client.get("/admin/api/v1/users", headers=admin)).status_code == 403  # type: ignore[union-attr]


async def test_v7_4_1_a_session_revoked_by_sql_and_a_revoked_api_key_are_refused(harness: Harness) -> None:
    user = await harness.user("alice@example.com")
    session = harness.bearer(await harness.sign_in(user))
    key = harness.bearer(await create_api_key(harness.app, user, scopes=("me:read",)))
    assert (await harness.client.get(ME, headers=session)).status_code == 200
    assert (await harness.client.get(ME, headers=key)).status_code == 200
    outsider = open_database(harness.settings.sqlalchemy_url)
    try:
        async with transaction(outsider) as tx:
            await tx.execute(update(Session).values(revoked_at=harness.clock.now()))
            await tx.execute(update(ApiKey).values(revoked_at=harness.clock.now()))
    finally:
        await outsider.close()
    assert (await harness.client.get(ME, headers=session)).status_code == 401
    assert (await harness.client.get(ME, headers=key)).status_code == 401


async def test_v7_4_1_no_request_after_a_revocation_is_served_under_concurrency(harness: Harness) -> None:
    """Requests race a revocation: any that starts after the revocation
    returned is refused, however many remembered the session before."""
    tokens = await harness.signed_in("alice@example.com")
    alice = harness.bearer(tokens)
    before = await asyncio.gather(*(harness.client.get(ME, headers=alice) for _ in range(20)))
    assert {response.status_code for response in before} == {200}
    racing = [asyncio.ensure_future(harness.client.get(ME, headers=alice)) for _ in range(20)]
    assert (await harness.client.post("/api/v1/auth/logout", headers=alice)).status_code == 204
    after = await asyncio.gather(*(harness.client.get(ME, headers=alice) for _ in range(20)))
    await asyncio.gather(*racing)
    assert {response.status_code for response in after} == {401}


async def test_a_role_granted_to_a_signed_in_user_is_seen_and_sign_ups_forget_nothing(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = counting(monkeypatch)
    user = await harness.user("alice@example.com")
    alice = harness.bearer(await harness.sign_in(user))
    assert (await harness.client.get(ME, headers=alice)).status_code == 200
    for n in range(3):  # new accounts get roles: nobody signed in is concerned
        await harness.register(f"new{n}@example.com", verify=False)
    assert (await harness.client.get(ME, headers=alice)).status_code == 200
    assert len(lookups) == 1
    outsider = open_database(harness.settings.sqlalchemy_url)
    try:
        async with transaction(outsider) as tx:
            await tx.execute(insert(UserRole), {"user_id": user.id, "role": "admin"})
    finally:
        await outsider.close()
    me = await harness.client.get(ME, headers=alice)
    assert me.status_code == 200
    assert len(lookups) == 2
    assert "admin" in me.json()["roles"]
