"""`bastion keys status`: each keyring's key age and due date; a [rotation] interval
that is not a positive duration is one line and exit 2, with nothing changed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from bastion.secrets import open_keyrings
from bastion.settings import Settings

runner = CliRunner()


@pytest.fixture(autouse=True)
def _same_database(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_DATABASE_URL", settings.sqlalchemy_url)


def test_keys_status_shows_every_keyring_with_its_age_and_due_date(settings: Settings) -> None:
    """V11.6.1 (a key's age against its rotation schedule is visible): one row per
    keyring, due a signing_every (30 days) or a year after its creation; hmac manual."""
    result = runner.invoke(app, ["keys", "status", "--json", "--data-dir", str(settings.data_dir)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    rows = {row["purpose"]: row for row in document["keys"]}
    assert set(rows) == {"signing", "signing-rs256", "signing-es256", "encryption", "notary", "hmac"}
    rings = open_keyrings(settings)
    assert rows["signing"]["kid"] == rings.signing.active_kid
    assert rows["signing"]["every_days"] == 30
    assert rows["encryption"]["every_days"] == 365
    assert rows["hmac"]["automatic"] is False
    assert not any(row["due"] for row in rows.values())
    assert document["rewrap_pending"] is None
    table = runner.invoke(app, ["keys", "status", "--data-dir", str(settings.data_dir)])
    assert table.exit_code == 0
    assert "manual" in table.stdout


# One data directory for every case (an init costs seconds); each case is undone after.
BAD = [("toml", "-3d"), ("toml", "soon"), ("env", "0s"), ("env", "4000d")]


def test_a_rotation_interval_that_is_not_a_positive_duration_is_one_line_exit_2(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's bad input: one clear line naming the setting, exit 2, and the
    keystore untouched (no rotation happens on a misread schedule)."""
    before = {p.name: p.read_bytes() for p in settings.keys_dir.iterdir()}
    config = settings.config_file
    original = config.read_text()
    for where, value in BAD:
        if where == "toml":
            config.write_text(original + f'\n[rotation]\nsigning_every = "{value}"\n')
        else:
            monkeypatch.setenv("BASTION_ROTATION__CHECK_INTERVAL", value)
        for command in (["keys", "status"], ["keys", "rotate", "signing"]):
            result = runner.invoke(app, [*command, "--data-dir", str(settings.data_dir)])
            assert result.exit_code == 2, (where, value, result.output)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, result.stderr
            assert lines[0].startswith("error: invalid setting rotation."), lines[0]
            assert "duration" in lines[0]
        config.write_text(original)
        monkeypatch.delenv("BASTION_ROTATION__CHECK_INTERVAL", raising=False)
    assert {p.name: p.read_bytes() for p in settings.keys_dir.iterdir()} == before
