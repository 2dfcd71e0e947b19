"""[alerts] and [audit] webhook settings: where alerts and checkpoints may be
sent, and the Standard Webhooks secret that signs them."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from bastion.posture import check_settings
from bastion.security import parse_webhook_secret
from bastion.settings import ConfigError, load_settings, webhook_url_allowed

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/alerts",
        "https://hooks.example.com:8443/a?b=c",
        "http://127.0.0.1:9000/hook",
        "http://127.9.9.9/hook",
        "http://[::1]:9000/hook",
        "http://127.0.0.1/hook",
        "https://localhost:9000/hook",  # a name is fine over TLS: the certificate names the receiver
    ],
)
def test_https_anywhere_and_http_to_loopback_are_allowed(url: str) -> None:
    assert webhook_url_allowed(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/alerts",  # clear text across the network
        "http://10.0.0.5/hook",
        "http://[::ffff:10.0.0.5]/hook",
        "http://localhost:9000/hook",  # a name, not an address: /etc/hosts or a resolver decides where it goes
        "http://LOCALHOST/hook",
        "http://localhost./hook",
        "http://ip6-localhost/hook",
        "http://0.0.0.0:9000/hook",  # "this host" on some stacks, every interface on others
        "http://[::]:9000/hook",
        "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped: not ::1
        "http://127.1/hook",  # a shorthand resolvers expand; not a literal address
        "http://2130706433/hook",
        "http://localhost.example.com/hook",
        "http://127.0.0.1.nip.io/hook",
        "https://user:pass@hooks.example.com/",  # credentials in the URL end up in logs
        "https:///nohost",
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "https://hooks.example.com:99999/",
        "hooks.example.com/alerts",
        "",
    ],
)
def test_other_urls_are_refused(url: str) -> None:
    """V12.3.1 (TLS for outbound connections, monitoring systems included): alerts never cross the network in clear."""
    assert not webhook_url_allowed(url)


def test_a_bad_webhook_url_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^invalid setting alerts\.webhook_urls.*loopback address"):
        load_settings(tmp_path, alerts={"webhook_urls": ["http://localhost:9000/hook"]})
    with pytest.raises(ConfigError, match=r"^invalid setting audit\.checkpoint_webhook_urls"):
        load_settings(tmp_path, audit={"checkpoint_webhook_urls": ["http://localhost:9000/hook"]})
    with pytest.raises(ConfigError, match=r"^invalid setting alerts\.webhook_urls.*not an https URL"):
        load_settings(tmp_path, alerts={"webhook_urls": ["https://ok.example.com/", "http://hooks.example.com/"]})
    with pytest.raises(ConfigError, match=r"^invalid setting audit\.checkpoint_webhook_urls"):
        load_settings(tmp_path, audit={"checkpoint_webhook_urls": ["http://192.0.2.1/"]})
    with pytest.raises(ConfigError, match=r"^invalid setting alerts\.admin_url"):
        load_settings(tmp_path, alerts={"admin_url": "http://admin.example.com"})
    settings = load_settings(tmp_path, alerts={"admin_url": "https://admin.example.com:8444/"})
    assert settings.alerts.admin_url == "https://admin.example.com:8444"


@pytest.mark.parametrize(
    "secret",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
        "whsec_",  # no key
        "whsec_" + base64.b64encode(b"k" * 23).decode(),  # too short
        "whsec_" + base64.b64encode(b"k" * 65).decode(),  # too long for the spec
        "whsec_not base64!!",
        "whsec_" + base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(),  # the URL-safe alphabet is not the spec's
    ],
)
def test_a_malformed_webhook_secret_is_refused_without_echoing_it(tmp_path: Path, secret: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(tmp_path, alerts={"webhook_secret": secret})
    with pytest.raises(ValueError):  # noqa: PT011 - the primitive agrees
        parse_webhook_secret(secret)
    message = str(refused.value)
    assert message.startswith("invalid setting alerts.webhook_secret")
    if len(secret) > len("whsec_"):
        assert secret not in message
        assert secret.removeprefix("whsec_") not in message


def test_the_spec_example_secret_and_a_32_byte_key_are_accepted(tmp_path: Path) -> None:
    """What settings accept, the signing primitive takes (and the reverse for the refused ones above)."""
    unpadded = "whsec_" + base64.b64encode(b"k" * 31).decode().rstrip("=")
    for secret in ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", SECRET, unpadded):
        settings = load_settings(tmp_path, alerts={"webhook_secret": secret})
        assert settings.alerts.webhook_secret is not None
        assert settings.alerts.webhook_secret.get_secret_value() == secret
        assert parse_webhook_secret(secret)


def test_the_secret_can_come_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET + "\n")
    monkeypatch.setenv("BASTION_ALERTS__WEBHOOK_SECRET_FILE", str(secret_file))
    settings = load_settings(tmp_path / "data")
    assert settings.alerts.webhook_secret is not None
    assert settings.alerts.webhook_secret.get_secret_value() == SECRET


def _finding(settings_kwargs: dict[str, object], tmp_path: Path) -> list[str]:
    settings = load_settings(tmp_path, **settings_kwargs)  # type: ignore[arg-type]
    return [f.severity for f in check_settings(settings) if f.setting == "alerts.webhook_secret"]


def test_unsigned_webhooks_are_an_error_in_prod_and_a_warning_in_dev(tmp_path: Path) -> None:
    hooks = {"webhook_urls": ["https://hooks.example.com/"]}
    assert _finding({"alerts": hooks}, tmp_path) == ["warning"]
    assert _finding({"mode": "prod", "alerts": hooks}, tmp_path) == ["error"]
    assert _finding({"mode": "prod", "alerts": {**hooks, "webhook_secret": SECRET}}, tmp_path) == []
    assert _finding({"mode": "prod"}, tmp_path) == []


def test_nested_secret_files_work_and_top_level_file_settings_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BASTION_<SECTION>__<SECRET>_FILE (here mail's SMTP password) is read, not refused as an unknown key."""
    password = tmp_path / "smtp-password"
    password.write_text("s3cret-Smtp-Passw0rd\n")
    monkeypatch.setenv("BASTION_MAIL__SMTP_PASSWORD_FILE", str(password))
    monkeypatch.setenv("BASTION_MASTER_KEY_FILE", str(tmp_path / "master.key"))
    settings = load_settings(tmp_path / "data")
    assert settings.mail.smtp_password is not None
    assert settings.mail.smtp_password.get_secret_value() == "s3cret-Smtp-Passw0rd"
    assert settings.master_key_file == tmp_path / "master.key"


def test_a_json_dump_shows_webhook_urls_as_their_origin_only(tmp_path: Path) -> None:
    """V13.3.1: a webhook URL often carries its receiver's token in the path or query; the settings'
    JSON form (the forensic bundle's config.json) keeps only ``scheme://host:port/…``, the database
    and Redis URLs are masked whole, and the settings themselves keep the full URLs."""
    from bastion.cli.forensics import redacted_config

    hooks = ["https://hooks.example.com/services/T0/B0/tok-4f2a", "http://[::1]:9000/hook?token=tok-77c1"]
    checkpoints = ["https://witness.example.org:8443/v1/tok-9e0b/checkpoints#tok-frag"]
    settings = load_settings(
        tmp_path,
        alerts={"webhook_urls": hooks},
        audit={"checkpoint_webhook_urls": checkpoints},
        database_url="postgresql+asyncpg://bastion:db-pass-3c1@db.internal/bastion",
        redis_url="rediss://:redis-pass-8d2@cache.internal:6380/0",
    )
    assert settings.alerts.webhook_urls == hooks
    config = redacted_config(settings)
    assert config["alerts"]["webhook_urls"] == ["https://hooks.example.com/…", "http://[::1]:9000/…"]
    assert config["audit"]["checkpoint_webhook_urls"] == ["https://witness.example.org:8443/…"]
    assert config["database_url"] == config["redis_url"] == "**********"
    dumped = repr(config)
    for secret in ("tok-", "db-pass", "redis-pass", "/services/", "/v1/"):
        assert secret not in dumped, secret


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_" + base64.b64encode(b"k" * 32).decode(),
        "whsec_" + base64.b64encode(b"k" * 32).decode() + "=",  # over-padded: the signer refuses it
        "whsec_" + base64.b64encode(b"k" * 32).decode() + "==",
        "whsec_" + base64.b64encode(b"k" * 31).decode() + "=",
        "whsec_" + base64.b64encode(b"k" * 30).decode().rstrip("=") + "====",
        "whsec_" + base64.b64encode(b"k" * 24).decode(),
        "whsec_" + base64.b64encode(b"k" * 64).decode(),
        "whsec_" + "A" * 33,
        "whsec_" + base64.b64encode(b"k" * 32).decode()[:-1],
    ],
)
def test_settings_accept_exactly_the_secrets_the_signer_takes(tmp_path: Path, secret: str) -> None:
    """One rule, in bastion.security: a secret the settings accept never fails at delivery time."""
    try:
        parse_webhook_secret(secret)
    except ValueError:
        with pytest.raises(ConfigError, match=r"^invalid setting alerts\.webhook_secret") as refused:
            load_settings(tmp_path, alerts={"webhook_secret": secret})
        assert "\n" not in str(refused.value)
        assert secret.removeprefix("whsec_") not in str(refused.value)
    else:
        assert load_settings(tmp_path, alerts={"webhook_secret": secret}).alerts.webhook_secret is not None
