"""``bastion block list | add | remove`` beside a serving app: the block is
refused by the app within the refresh bound, each change is audited, and
bad input is one line with exit code 2 and changes nothing."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from bastion.audit.models import AuditEvent
from bastion.network.models import Block
from harness import Harness

runner = CliRunner()
ATTACKER = "203.0.113.77"


async def bastion(harness: Harness, *args: str) -> tuple[int, str, str]:
    """The command, run beside the serving app (in a thread: it has its own event loop and services)."""
    from bastion.cli import app

    result = await asyncio.to_thread(runner.invoke, app, [*args, "--data-dir", str(harness.settings.data_dir)])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(autouse=True)
def _cli_database(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_DATABASE_URL", harness.settings.sqlalchemy_url)


async def attacker_status(harness: Harness) -> int:
    transport = httpx.ASGITransport(app=harness.app, client=(ATTACKER, 5000))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        return (await client.get("/healthz")).status_code


async def test_block_add_list_remove(harness: Harness) -> None:
    """The operator's block reaches the serving app within 1 s; list shows it; remove lifts it; all audited."""
    assert await attacker_status(harness) == 200
    code, out, err = await bastion(harness, "block", "add", ATTACKER, "--for", "2h", "--reason", "scanner")
    assert code == 0, err
    assert f"{ATTACKER}/32" in out
    started = time.monotonic()
    while await attacker_status(harness) != 403:
        assert time.monotonic() - started < 5.0, "never refused"
    latency = time.monotonic() - started
    assert latency < 1.0, f"refused after {latency:.3f} s"

    code, out, _ = await bastion(harness, "block", "list", "--json")
    assert code == 0
    [listed] = json.loads(out)
    assert listed["network"] == f"{ATTACKER}/32"
    assert listed["reason"] == "scanner"
    assert listed["source"] == "manual"
    code, out, _ = await bastion(harness, "block", "list")
    assert out.count("\n") == 1
    assert listed["id"] in out

    code, out, err = await bastion(harness, "block", "remove", listed["id"])
    assert code == 0, err
    started = time.monotonic()
    while await attacker_status(harness) != 200:
        assert time.monotonic() - started < 5.0, "never lifted"
    # By network too.
    assert (await bastion(harness, "block", "add", "198.51.100.0/24", "--for", "15m"))[0] == 0
    code, out, _ = await bastion(harness, "block", "remove", "198.51.100.0/24")
    assert code == 0
    assert "198.51.100.0/24" in out
    events = await harness.app.state.db.all(select(AuditEvent.tag, AuditEvent.request_id))
    assert [e.tag for e in events if e.tag.startswith("monitor:block")] == [
        "monitor:block:add", "monitor:block:remove", "monitor:block:add", "monitor:block:remove",
    ]  # fmt: skip
    assert all(e.request_id == "cli" for e in events if e.tag.startswith("monitor:block"))


@pytest.mark.parametrize(
    "args",
    [
        ["block", "add", "203.0.113.7/24", "--for", "1h"],
        ["block", "add", "not-an-address", "--for", "1h"],
        ["block", "add", ATTACKER, "--for", "forever"],
        ["block", "add", ATTACKER, "--for", "0s"],
        ["block", "add", ATTACKER, "--for", "1h", "--reason", "x" * 300],
        ["block", "remove", "no-such-thing"],
        ["block", "remove", "203.0.113.9"],
        ["block", "remove", "5b8d4f9e-2c1a-4e57-9a43-0c6d2f1e8b70"],
    ],
)
async def test_bad_input_is_one_line_and_changes_nothing(harness: Harness, args: list[str]) -> None:
    code, out, err = await bastion(harness, *args)
    assert code == 2, (out, err)
    assert err.count("\n") == 1
    assert err.startswith("error:")
    assert await harness.app.state.db.value(select(func.count()).select_from(Block)) == 0


async def test_add_needs_a_duration(harness: Harness) -> None:
    code, _, err = await bastion(harness, "block", "add", ATTACKER)
    assert code == 2
    assert "--for" in err
