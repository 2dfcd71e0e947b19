"""What every command shares (bastion.cli.common): one parser for times and
durations (a unit always required, nothing guessed), and usage errors in one
line with exit code 2, as every other failure."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from bastion.cli.common import CommandError, parse_cli_duration, parse_when

NOW = dt.datetime(2026, 12, 1, 18, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1.5h", 5400), (" 10m ", 600)],
)
def test_a_duration_with_its_unit(text: str, seconds: float) -> None:
    assert parse_cli_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["5", "2026", "", "s", "-5s", "0s", "1e3s", "inf", "nan", "5 m", "5w", "3650d", "2h30m"]
)
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(CommandError) as refused:
        parse_cli_duration(text)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("text", "when"),
    [
        ("24h", NOW - dt.timedelta(hours=24)),
        ("30s", NOW - dt.timedelta(seconds=30)),
        ("7d", NOW - dt.timedelta(days=7)),
        ("2026-03-01T12:00:00Z", dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)),
        ("2026-03-01t12:00:00.250z", dt.datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=dt.UTC)),
        ("2026-03-01 14:00:00+02:00", dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)),
        ("2026-03-01T07:00:00-05:00", dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)),
    ],
)
def test_a_time_is_rfc_3339_or_a_duration_ago(text: str, when: dt.datetime) -> None:
    parsed = parse_when(text, NOW)
    assert parsed == when
    assert parsed.tzinfo is dt.UTC


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2026", "neither an RFC 3339 time nor a duration"),  # a year, or 2026 seconds? Neither.
        ("5", "neither an RFC 3339 time nor a duration"),
        ("yesterday", "neither an RFC 3339 time nor a duration"),
        ("2026-03-01", "neither an RFC 3339 time nor a duration"),  # a date is not a date-time
        ("20260301T120000Z", "neither an RFC 3339 time nor a duration"),  # ISO 8601 basic form
        ("2026-03-01T12:00Z", "neither an RFC 3339 time nor a duration"),  # seconds are required
        ("2026-03-01T12:00:00", "no UTC offset"),
        ("2026-02-30T12:00:00Z", "not a valid RFC 3339 time"),
        ("2026-03-01T12:00:00+24:00", "not a valid RFC 3339 time"),
        ("0s", "above zero"),
        ("x" * 500, "neither"),
    ],
)
def test_anything_else_is_refused_in_one_line(text: str, reason: str) -> None:
    with pytest.raises(CommandError, match=reason) as refused:
        parse_when(text, NOW)
    message = str(refused.value)
    assert "\n" not in message
    assert len(message) < 160  # the input is quoted, but only its start


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["user", "lock"], "Missing argument"),
        (["block", "add", "203.0.113.7"], "Missing option '--for'"),
        (["audit", "export", "--since", "1h"], "Missing option '--out'"),
        (["incident", "lockdown"], "Missing argument"),
        (["block", "add", "203.0.113.7", "--for", "1h", "--bogus"], "No such option: --bogus"),
        (["block", "add", "203.0.113.7", "--for"], "requires an argument"),
        (["no-such-command"], "No such command"),
        (["serve", "--port", "abc"], "Invalid value for '--port'"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_code_2(args: list[str], reason: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: "), line
    assert reason in line
    assert "Traceback" not in result.stderr


def test_no_arguments_still_show_the_help() -> None:
    for args in ([], ["block"]):
        result = CliRunner().invoke(app, args)
        assert "Usage: bastion" in result.output
        assert "error:" not in result.output
