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
    assert bastion(data, "user", "set-role", "admin@example.com", "user")[0] == 0
    assert "admin@example.com │ " in bastion(data, "user", "list")[1]
    assert ",admin" not in bastion(data, "user", "list")[1]
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


def _users(data: Path) -> list[tuple[str, list[str]]]:
    async def read() -> list[tuple[str, list[str]]]:
        from bastion.clock import SystemClock
        from bastion.runtime import build_services

        services = build_services(load_settings(data), SystemClock())
        try:
            return [(user.email, roles) for user, roles in await services.identity.list_users(services.db)]
        finally:
            await services.close()

    return asyncio.run(read())


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--email", "bad"], "error: The email address is not valid.\n"),
        (["--email", "a@b@example.com"], "error: The email address is not valid.\n"),
        (["--email", "x" * 250 + "@example.com"], "error: The email address is not valid.\n"),
        (["--email", "wiz@example.com", "--role", "wizard"], "error: No such role: wizard.\n"),
        (["--email", "wiz@example.com", "--role", "Admin"], "error: No such role: Admin.\n"),
    ],
)
def test_create_refuses_what_the_api_refuses(data: Path, args: list[str], reason: str) -> None:
    """V2.2.1: the command line validates input as the API does: one line, exit 2, nothing stored."""
    code, out, err = bastion(data, "user", "create", *args, "--password-stdin", stdin=PASSWORD + "\n")
    assert (code, out, err) == (2, "", reason)
    assert _users(data) == []


def test_set_role_refuses_an_unknown_role_and_keeps_the_old_one(data: Path) -> None:
    """V8.2.1: a role nobody defined is never granted (it would take whatever a later role of that name holds)."""
    created = bastion(data, "user", "create", "--email", "u@example.com", "--password-stdin", stdin=PASSWORD + "\n")
    assert created[0] == 0
    code, _, err = bastion(data, "user", "set-role", "u@example.com", "wizard")
    assert (code, err) == (2, "error: No such role: wizard.\n")
    assert _users(data) == [("u@example.com", ["user"])]
    assert bastion(data, "user", "set-role", "u@example.com", "admin")[0] == 0
    assert _users(data) == [("u@example.com", ["admin"])]


def test_password_stdin_on_a_terminal_prompts_without_echo(data: Path) -> None:
    """V6.1.x: a password typed at a terminal is asked for and never echoed.

    The command runs on a real pseudo-terminal (its controlling terminal), so
    the line discipline echoes whatever the command does not hide.
    """
    import os
    import pty
    import select
    import sys

    pid, master = pty.fork()
    if pid == 0:  # the child: `bastion user create` on the terminal
        command = ["-m", "bastion", "user", "create", "--email", "t@example.com", "--password-stdin"]
        os.execv(sys.executable, [sys.executable, *command, "--data-dir", str(data)])  # noqa: S606 - fixed argv

    def read_until(needle: bytes, seen: bytearray) -> None:
        while needle not in seen:
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, f"no {needle!r} in {bytes(seen)!r}"
            try:
                chunk = os.read(master, 1024)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen.extend(chunk)

    # The space after the colon is getpass's own prompt, written once echo is off.
    seen = bytearray()
    read_until(b"Password: ", seen)
    os.write(master, PASSWORD.encode() + b"\n")
    read_until(b"Repeat for confirmation: ", seen)
    os.write(master, PASSWORD.encode() + b"\n")
    read_until(b"created t@example.com", seen)
    read_until(b"\x00never", seen)  # to the end of output
    _, status = os.waitpid(pid, 0)
    os.close(master)
    assert os.waitstatus_to_exitcode(status) == 0, bytes(seen)
    assert PASSWORD.encode() not in bytes(seen)
    assert _users(data) == [("t@example.com", ["user"])]
