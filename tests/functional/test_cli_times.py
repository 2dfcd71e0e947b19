"""Times and durations on the command line mean the same in every command
(``audit export``, ``incident export``, ``block add``): RFC 3339 with its
offset or a duration ago, a unit always required; anything else is one line
and exit code 2, and nothing is written. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from bastion.network.models import Block
from harness import Harness

pytestmark = pytest.mark.clock_now  # the command line dates its audit events by the real clock
runner = CliRunner()
ADDRESS = "203.0.113.77"


@pytest.fixture(autouse=True)
def _same_database(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_DATABASE_URL", harness.settings.sqlalchemy_url)


async def bastion(harness: Harness, *args: str) -> tuple[int, str, str]:
    """The command beside the serving app (in a thread: it runs its own event loop)."""
    from bastion.cli import app

    result = await asyncio.to_thread(runner.invoke, app, [*args, "--data-dir", str(harness.settings.data_dir)])
    if result.exit_code == 1 and not result.stderr:  # an exception, not a one-line failure: show it
        return result.exit_code, result.stdout, repr(result.exception)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("command", ["audit", "incident"])
@pytest.mark.parametrize(
    "times",
    [
        ["--since", "2026"],  # a year or 2026 seconds ago? Neither: refused everywhere.
        ["--since", "86400"],
        ["--since", "2026-01-01"],
        ["--since", "2026-01-01T00:00:00"],  # no offset
        ["--since", "24h", "--until", "3600"],
        ["--since", "yesterday"],
    ],
)
async def test_an_export_refuses_a_time_it_would_have_to_guess(
    harness: Harness, tmp_path: Path, command: str, times: list[str]
) -> None:
    await harness.signed_in("alice@example.com")  # so that only the time can be refused
    out = tmp_path / "bundle"
    code, _, err = await bastion(harness, command, "export", *times, "--out", str(out))
    assert code == 2, err
    assert err.startswith("error:"), err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize("command", ["audit", "incident"])
async def test_every_export_reads_a_duration_ago_and_an_rfc_3339_time(
    harness: Harness, tmp_path: Path, command: str
) -> None:
    await harness.signed_in("alice@example.com")  # events to export
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for number, times in enumerate([["--since", "24h"], ["--since", since, "--until", "30s"]]):
        out = tmp_path / f"bundle-{number}"
        code, _, err = await bastion(harness, command, "export", *times, "--out", str(out))
        assert code == 0, (times, err)
        assert out.is_file()


@pytest.mark.parametrize("duration", ["5", "300", "5 m", "5w", "0s", "-5m", "1e3s", "3650d"])
async def test_block_add_refuses_a_duration_without_its_unit(harness: Harness, duration: str) -> None:
    code, _, err = await bastion(harness, "block", "add", ADDRESS, "--for", duration)
    assert code == 2, err
    assert err.startswith("error: --for:"), err
    assert len(err.strip().splitlines()) == 1, err
    assert await harness.app.state.db.value(select(func.count()).select_from(Block)) == 0


async def test_block_add_reads_the_same_durations_as_the_exports(harness: Harness) -> None:
    code, _, err = await bastion(harness, "block", "add", ADDRESS, "--for", "15m")
    assert code == 0, err
    [block] = await harness.app.state.db.all(select(Block))
    assert block.expires_at is not None
    assert block.expires_at - block.created_at == dt.timedelta(minutes=15)
