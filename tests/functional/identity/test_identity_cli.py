"""``bastion user …`` and ``bastion sessions revoke`` against a real data dir."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from bastion.app import create_app
from bastion.cli import app as cli
from bastion.instance import initialise
from bastion.settings import load_settings
from harness import PASSWORD

runner = CliRunner()


def bastion(data: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(cli, [*args, "--data-dir", str(data)], input=stdin)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def data(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    initialise(load_settings(directory))
    return directory


def test_create_list_set_role_lock_unlock(data: Path) -> None:
    code, out, err = bastion(
        data,
        "user",
        "create",
        "--email",
        "Admin@Example.com",
        "--role",
        "admin",
        "--password-stdin",
        "--verified",
        stdin=PASSWORD + "\n",
    )
    assert code == 0, err
    assert "admin@example.com" in out
    code, out, _ = bastion(data, "user", "list")
    assert code == 0
    assert "admin@example.com" in out
    assert PASSWORD not in out
    assert bastion(data, "user", "set-role", "admin@example.com", "editor")[0] == 0
    assert "editor" in bastion(data, "user", "list")[1]
    assert bastion(data, "user", "lock", "admin@example.com")[0] == 0
    assert "disabled" in bastion(data, "user", "list")[1]
    assert bastion(data, "user", "unlock", "admin@example.com")[0] == 0
    assert "active" in bastion(data, "user", "list")[1]


def test_bad_input_is_one_line(data: Path) -> None:
    code, _, err = bastion(data, "user", "create", "--email", "a@example.com", "--password-stdin", stdin="password\n")
    assert code == 2
    assert err.startswith("error: password refused")
    assert err.count("\n") == 1
    assert (
        bastion(data, "user", "create", "--email", "a@example.com", "--password-stdin", stdin=PASSWORD + "\n")[0] == 0
    )
    code, _, err = bastion(
        data, "user", "create", "--email", "A@example.com", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert code == 2
    assert "already exists" in err
    code, _, err = bastion(data, "user", "lock", "nobody@example.com")
    assert code == 2
    assert err == "error: no user with email nobody@example.com\n"
    code, _, err = bastion(data, "sessions", "revoke")
    assert code == 2
    assert "--user" in err


async def test_sessions_revoke_ends_live_sessions(data: Path) -> None:
    """V7.4.x: an administrator can end a user's sessions; tokens stop at once."""
    # Commands run their own event loop, as from a shell: off this test's loop.
    created = await asyncio.to_thread(
        bastion,
        data,
        "user",
        "create",
        "--email",
        "u@example.com",
        "--password-stdin",
        "--verified",
        stdin=PASSWORD + "\n",
    )
    assert created[0] == 0
    app = create_app(load_settings(data))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as client,
    ):
        tokens = (await client.post("/api/v1/auth/login", json={"email": "u@example.com", "password": PASSWORD})).json()
        headers = {"authorization": f"Bearer {tokens['access_token']}"}
        assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
        code, out, err = await asyncio.to_thread(bastion, data, "sessions", "revoke", "--user", "u@example.com")
        assert code == 0, err
        assert "revoked 1" in out
        assert (await client.get("/api/v1/me", headers=headers)).status_code == 401
