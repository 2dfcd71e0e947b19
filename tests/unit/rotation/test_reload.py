"""What a SIGHUP re-reads: every ``*_FILE`` secret (the master key's aside), read
again when a worker builds its services; and the signal reaching the supervisor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bastion.network.supervisor import SUPERVISOR_PID_ENV
from bastion.rotation.reload import FileWatch, secret_files, signal_listeners
from bastion.settings import ConfigError, load_settings, reread_secret_files, secret_file_variables


def test_secret_files_are_read_again_and_a_direct_value_still_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """V13.3.4 (secrets rotated without a redeploy): a rotated SMTP password, webhook
    secret and database URL in their files are what a worker built after SIGHUP uses."""
    smtp, database = tmp_path / "smtp", tmp_path / "database"
    smtp.write_text("first\n")
    database.write_text("sqlite+aiosqlite:///first.db")
    monkeypatch.setenv("BASTION_MAIL__SMTP_PASSWORD_FILE", str(smtp))
    monkeypatch.setenv("BASTION_DATABASE_URL_FILE", str(database))
    settings = load_settings(tmp_path)
    assert settings.mail.smtp_password is not None
    assert settings.mail.smtp_password.get_secret_value() == "first"
    smtp.write_text("second\n")
    database.write_text("sqlite+aiosqlite:///second.db")
    again = reread_secret_files(settings)
    assert again.mail.smtp_password is not None
    assert again.mail.smtp_password.get_secret_value() == "second"
    assert again.database_url is not None
    assert again.database_url.get_secret_value().endswith("second.db")
    assert again.mail.sender == settings.mail.sender  # the rest stays as it was
    assert "second" not in repr(again.mail)
    monkeypatch.setenv("BASTION_MAIL__SMTP_PASSWORD", "direct")  # the environment comes first, as at start-up
    direct = reread_secret_files(settings).mail.smtp_password
    assert direct is not None
    assert direct.get_secret_value() == "first"  # unchanged: the file no longer applies
    smtp.unlink()
    monkeypatch.delenv("BASTION_MAIL__SMTP_PASSWORD")
    with pytest.raises(ConfigError, match="SMTP_PASSWORD_FILE"):
        reread_secret_files(settings)


def test_the_master_key_file_is_not_among_the_reloaded_ones(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Changing the master key needs a restart (it unwraps the keystore): not watched, not re-read."""
    assert "BASTION_MASTER_KEY_FILE" not in secret_file_variables()
    assert "BASTION_ALERTS__WEBHOOK_SECRET_FILE" in secret_file_variables()
    monkeypatch.setenv("BASTION_MASTER_KEY_FILE", str(tmp_path / "master"))
    monkeypatch.setenv("BASTION_REDIS_URL_FILE", str(tmp_path / "redis"))
    assert set(secret_files()) == {"BASTION_REDIS_URL_FILE"}


def test_file_watch_sees_a_replacement_an_edit_and_a_removal(tmp_path: Path) -> None:
    path = tmp_path / "cert.pem"
    path.write_text("one")
    watch = FileWatch({"cert": path})
    assert watch.changed() == []
    path.write_text("two, longer")
    assert watch.changed() == ["cert"]
    assert watch.changed() == []
    path.unlink()
    assert watch.changed() == ["cert"]


def test_the_supervisor_gets_sighup(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's reload is a SIGHUP to the pid `bastion serve` hands its listeners."""
    program = (
        "import signal; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP}); print('ready', flush=True); "
        "print(signal.sigwait({signal.SIGHUP}) == signal.SIGHUP, flush=True)"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        assert supervisor.stdout is not None
        assert supervisor.stdout.readline().strip() == "ready"
        monkeypatch.setenv(SUPERVISOR_PID_ENV, str(supervisor.pid))
        assert signal_listeners() is True
        out, _ = supervisor.communicate(timeout=10)
        assert out.strip() == "True"
    finally:
        supervisor.kill()
        supervisor.wait()
    monkeypatch.delenv(SUPERVISOR_PID_ENV)
    assert signal_listeners() is False
