"""Settings sources and the Secret type."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.settings import ConfigError, Secret, load_settings


def test_environment_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bastion.toml").write_text("[server]\nport = 9000\nhost = '0.0.0.0'\n")
    monkeypatch.setenv("BASTION_SERVER__PORT", "9443")
    settings = load_settings(tmp_path)
    assert settings.server.port == 9443
    assert settings.server.host == "0.0.0.0"


def test_secret_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "redis-url"
    secret.write_text("redis://:hunter2@127.0.0.1:6379/0\n")
    monkeypatch.setenv("BASTION_REDIS_URL_FILE", str(secret))
    settings = load_settings(tmp_path)
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://:hunter2@127.0.0.1:6379/0"
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())


def test_unreadable_secret_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_DATABASE_URL_FILE", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="BASTION_DATABASE_URL_FILE"):
        load_settings(tmp_path)


def test_secret_never_prints() -> None:
    """V13.3.1 (secrets not exposed): repr and str are masked."""
    secret = Secret("correct horse battery staple")
    assert repr(secret) == "'**********'"
    assert str(secret) == "**********"
    assert f"{secret}" == "**********"


def test_invalid_value_names_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_SERVER__PORT", "99999")
    with pytest.raises(ConfigError, match=r"server\.port.*BASTION_SERVER__PORT"):
        load_settings(tmp_path)


def test_master_key_from_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "master.key").write_text("from-file")
    monkeypatch.setenv("BASTION_MASTER_KEY", "from-env")
    assert load_settings(tmp_path).master_key_source() == ("from-env", None)


def test_dev_falls_back_to_the_generated_key_but_prod_does_not(tmp_path: Path) -> None:
    (tmp_path / "master.key").write_text("generated\n")
    assert load_settings(tmp_path).master_key_source() == ("generated", tmp_path / "master.key")
    assert load_settings(tmp_path, mode="prod").master_key_source() == (None, None)


def test_api_key_default_lifetime_cannot_exceed_the_maximum(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="api_key_default_days is longer than api_key_max_days"):
        load_settings(tmp_path, auth={"api_key_default_days": 400})


def test_the_checkpoint_interval_is_at_most_a_minute(tmp_path: Path) -> None:
    """V16.4.2: every event older than the last checkpoint, at most 60 s old, is covered."""
    assert load_settings(tmp_path, audit={"checkpoint_interval": "60s"}).audit.checkpoint_interval == 60.0
    assert load_settings(tmp_path, audit={"checkpoint_interval": "15s"}).audit.checkpoint_interval == 15.0
    for too_long in ("61s", "5m", "0s"):
        with pytest.raises(ConfigError, match=r"audit\.checkpoint_interval"):
            load_settings(tmp_path, audit={"checkpoint_interval": too_long})
