"""`bastion mail list|show`: the development outbox read back decoded, links
included, so a newcomer can open a verification link without an SMTP server."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from bastion.cli import app
from harness import Harness

pytestmark = pytest.mark.clock_now  # the command line dates its audit events by the real clock
runner = CliRunner()


async def test_mail_show_prints_the_decoded_link(harness: Harness) -> None:
    await harness.register("first@example.com", verify=False)
    await harness.register("second@example.com", verify=False)
    await harness.app.state.postman.drain()
    data = str(harness.settings.data_dir)
    # On disk the link is quoted-printable ("=3D"), which no one can paste.
    raw = b"".join(path.read_bytes() for path in (harness.settings.data_dir / "outbox").glob("*.eml"))
    assert b"#token=3D" in raw

    listed = runner.invoke(app, ["mail", "list", "--data-dir", data])
    assert listed.exit_code == 0, listed.output
    rows = [line for line in listed.stdout.splitlines() if "example.com" in line]
    assert "second@example.com" in rows[0]  # newest first
    assert "first@example.com" in rows[1]

    shown = runner.invoke(app, ["mail", "show", "--to", "first@example.com", "--data-dir", data])
    assert shown.exit_code == 0, shown.output
    token = await harness.token_from_last_mail("first@example.com")
    links = re.findall(r"^  (\S+)$", shown.stdout, re.M)
    assert links == [f"{harness.settings.auth.public_url}/verify-email#token={token}"]
    assert "Subject: Confirm your email address" in shown.stdout

    # The printed link works.
    response = await harness.client.post("/api/v1/auth/verify-email", json={"token": links[0].split("#token=")[1]})
    assert response.status_code == 204


async def test_mail_show_past_the_end_and_smtp_backend_are_one_line_errors(harness: Harness) -> None:
    data = str(harness.settings.data_dir)
    beyond = runner.invoke(app, ["mail", "show", "3", "--data-dir", data])
    assert beyond.exit_code == 2
    assert beyond.stderr.strip() == "error: the outbox holds 0 matching mail(s), not 3"

    (harness.settings.data_dir / "bastion.toml").write_text('[mail]\nbackend = "smtp"\n')
    refused = runner.invoke(app, ["mail", "list", "--data-dir", data])
    assert refused.exit_code == 2
    assert refused.stderr.strip().startswith('error: mail.backend is "smtp"')
