"""The admin API's unlock gives the owner back their sign-in budget (ASVS 5.0 V6.3.1)."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from bastion.identity.models import User
from harness import PASSWORD, Harness

ALICE = "alice@example.com"


async def test_v6_3_1_after_an_admin_unlock_the_owner_gets_in_at_once(
    harness: Harness, admin_client: httpx.AsyncClient
) -> None:
    """V6.3.1: locked by guessing, unlocked through PATCH disabled=false, the
    right password from a new address is a 200, not a 429 (the in-memory
    counters live in this process, and the admin route clears them)."""
    await harness.register(ALICE)
    admin = harness.bearer(await harness.admin())
    attacker = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=harness.app, client=("203.0.113.66", 5000)), base_url="https://testserver"
    )
    owner = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=harness.app, client=("198.51.100.77", 5000)), base_url="https://testserver"
    )
    async with attacker, owner:
        for n in range(12):
            await attacker.post("/api/v1/auth/login", json={"email": ALICE, "password": f"guess-{n:03d}"})
        signed_in = {"email": ALICE, "password": PASSWORD}
        assert (await owner.post("/api/v1/auth/login", json=signed_in)).status_code == 429
        alice = await harness.app.state.db.one(select(User.id).where(User.email == ALICE))
        assert alice is not None
        unlocked = await admin_client.patch(f"/admin/api/v1/users/{alice.id}", json={"disabled": False}, headers=admin)
        assert unlocked.status_code == 200
        assert (await owner.post("/api/v1/auth/login", json=signed_in)).status_code == 200
