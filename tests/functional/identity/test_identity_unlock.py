"""After an unlock or a password reset the owner gets in at once.

ASVS 5.0 V6.3.1: the lockout and the per-account throttle protect the
account from guessing; lifting the lockout (``bastion user unlock``, the
admin API) or resetting the password must also give the owner back the
sign-in budget the attacker spent, or the owner stays refused (429).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from bastion.app import create_app
from bastion.cli import app as cli
from bastion.clock import FrozenClock
from bastion.settings import Settings
from harness import NEW_PASSWORD, PASSWORD, Harness
from private_redis import PrivateRedis

ALICE = "alice@example.com"
ATTACKER = ("203.0.113.66", 5000)
OWNER = ("198.51.100.77", 5000)  # a new address: its own per-address budget is fresh


async def _guess_until_locked(app: object) -> None:
    transport = httpx.ASGITransport(app=app, client=ATTACKER)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as attacker:
        statuses = [
            (await attacker.post("/api/v1/auth/login", json={"email": ALICE, "password": f"guess-{n:03d}"})).status_code
            for n in range(12)
        ]
    assert statuses[-1] == 429  # the per-account budget is spent, and the account locked


async def _sign_in_as_owner(app: object, password: str) -> int:
    transport = httpx.ASGITransport(app=app, client=OWNER)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as owner:
        response = await owner.post("/api/v1/auth/login", json={"email": ALICE, "password": password})
    return response.status_code


async def test_v6_3_1_after_bastion_user_unlock_the_owner_gets_in_at_once(
    make_settings: Callable[..., Settings], private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """V6.3.1: lock, ``bastion user unlock``, the right password from a new
    address: 200, not 429. The CLI reaches the server's counters through the
    shared Redis."""
    # Detection off: its brute-force rule asks this account for a stronger sign-in (403)
    # as soon as its tail reads the guesses, a race with the lockout this test is about.
    settings = make_settings(
        passwords={"memory_cost_kib": 7168, "time_cost": 1}, redis_url=private_redis.url, monitor={"enabled": False}
    )
    app = create_app(settings, clock=FrozenClock())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=OWNER)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
            await Harness(app, client, app.state.clock, settings).register(ALICE)
        await _guess_until_locked(app)
        assert await _sign_in_as_owner(app, PASSWORD) == 429

        monkeypatch.setenv("BASTION_REDIS_URL", private_redis.url)
        if settings.database_url is not None:
            monkeypatch.setenv("BASTION_DATABASE_URL", settings.database_url.get_secret_value())
        unlock = ["user", "unlock", ALICE, "--data-dir", str(settings.data_dir)]
        result = await asyncio.to_thread(CliRunner().invoke, cli, unlock)  # the CLI runs its own event loop
        assert result.exit_code == 0, result.output

        assert await _sign_in_as_owner(app, PASSWORD) == 200


async def test_v6_3_1_after_a_password_reset_the_owner_gets_in_at_once(harness: Harness) -> None:
    """V6.3.1: the reset unlocks the account and gives back its sign-in budget."""
    await harness.register(ALICE)
    await _guess_until_locked(harness.app)
    forgot = await harness.client.post("/api/v1/auth/password/forgot", json={"email": ALICE})
    assert forgot.status_code == 202
    token = await harness.token_from_last_mail(ALICE)
    reset = await harness.client.post(
        "/api/v1/auth/password/reset", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert reset.status_code == 204
    assert await _sign_in_as_owner(harness.app, NEW_PASSWORD) == 200


def test_unlock_without_redis_still_unlocks(tmp_path: Path) -> None:
    """Without Redis the CLI cannot reach the server's in-memory counters; it still lifts the lockout."""
    runner = CliRunner()
    data = tmp_path / "data"
    assert runner.invoke(cli, ["init", "--data-dir", str(data)]).exit_code == 0
    created = runner.invoke(
        cli, ["user", "create", "--email", ALICE, "--password-stdin", "--data-dir", str(data)], input=PASSWORD + "\n"
    )
    assert created.exit_code == 0, created.output
    assert runner.invoke(cli, ["user", "unlock", ALICE, "--data-dir", str(data)]).exit_code == 0
