"""Outgoing mail against a real outbox directory and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import re
import ssl
import stat
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from bastion.identity import mail_texts
from bastion.mail import Mail, MailError, OutboxMailer, SmtpMailer, build_mailer
from bastion.security.x509 import write_dev_certificates
from bastion.settings import ConfigError, MailSettings, load_settings
from smtp_server import Inbox, free_port, smtp_server

SENDER = "Bastion <no-reply@bastion.test>"
MAIL = Mail(
    to="alice@example.com", subject="Confirm your address ✓", text="Open https://bastion.test/v?t=abc\nThanks.\n"
)
SMTP_USER = "mailer"
SMTP_PASSWORD = "s3cret-Smtp-Passw0rd"


StartSmtp = Callable[..., tuple[int, Inbox]]


@pytest.fixture
def start_smtp() -> Iterator[StartSmtp]:
    """Start an aiosmtpd server on 127.0.0.1; keyword arguments go to its Controller."""
    with ExitStack() as servers:
        yield lambda **parameters: servers.enter_context(smtp_server(**parameters))


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    write_dev_certificates(tmp_path / "tls")
    return tmp_path / "tls"


@pytest.fixture
def server_tls(tls_dir: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_dir / "server.pem", tls_dir / "server.key")
    return context


@pytest.fixture
def client_tls(tls_dir: Path) -> ssl.SSLContext:
    """Trusts only the development CA that signed the test server's certificate."""
    return ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))


def smtp_settings(port: int, **overrides: Any) -> MailSettings:
    values: dict[str, Any] = {"backend": "smtp", "sender": SENDER, "smtp_host": "127.0.0.1", "smtp_port": port}
    return MailSettings(**(values | overrides))


def assert_is_the_mail(message: EmailMessage, mail: Mail) -> None:
    assert message["From"] == SENDER
    assert message["To"] == mail.to
    assert message["Subject"] == mail.subject
    assert parsedate_to_datetime(message["Date"]).tzinfo is not None
    assert re.fullmatch(r"<[^<>@\s]+@bastion\.test>", message["Message-ID"])
    # SMTP carries CRLF line ends (RFC 5321 §2.3.8).
    assert message.get_content().replace("\r\n", "\n") == mail.text


# -- outbox ------------------------------------------------------------------


async def test_outbox_writes_rfc5322_files_only_the_owner_can_read(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    await OutboxMailer(outbox, SENDER).send(MAIL)
    [path] = outbox.iterdir()
    assert re.fullmatch(r"\d{8}T\d{12}Z-[0-9a-f]{16}\.eml", path.name)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700
    assert_is_the_mail(BytesParser(policy=policy.default).parsebytes(path.read_bytes()), MAIL)


async def test_outbox_names_sort_by_time_and_never_collide(tmp_path: Path) -> None:
    mailer = OutboxMailer(tmp_path / "outbox", SENDER)
    for n in range(20):
        await mailer.send(Mail(to="alice@example.com", subject=f"mail {n:02d}", text="x"))
    paths = sorted((tmp_path / "outbox").iterdir())
    parser = BytesParser(policy=policy.default)
    assert [parser.parsebytes(p.read_bytes())["Subject"] for p in paths] == [f"mail {n:02d}" for n in range(20)]


@pytest.mark.parametrize(
    "mail",
    [
        Mail(to="alice@example.com", subject="Hi\r\nBcc: eve@evil.test", text="x"),
        Mail(to="alice@example.com\nBcc: eve@evil.test", subject="Hi", text="x"),
    ],
)
async def test_header_injection_is_refused(tmp_path: Path, mail: Mail) -> None:
    with pytest.raises(MailError):
        await OutboxMailer(tmp_path / "outbox", SENDER).send(mail)
    assert not (tmp_path / "outbox").exists()


async def test_an_unwritable_outbox_is_a_mail_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-directory").write_text("")
    with pytest.raises(MailError, match="outbox"):
        await OutboxMailer(tmp_path / "not-a-directory" / "outbox", SENDER).send(MAIL)


# -- SMTP ----------------------------------------------------------------------


async def test_smtp_delivers_without_tls_when_told_to(start_smtp: StartSmtp) -> None:
    port, inbox = start_smtp()
    await SmtpMailer(smtp_settings(port, smtp_starttls=False)).send(MAIL)
    [envelope] = inbox.envelopes
    assert envelope.mail_from == "no-reply@bastion.test"
    assert envelope.rcpt_tos == ["alice@example.com"]
    assert_is_the_mail(inbox.messages()[0], MAIL)


async def test_smtp_starttls_delivers_to_a_trusted_server(
    start_smtp: StartSmtp, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    # require_starttls: the server refuses MAIL FROM until the session is encrypted.
    port, inbox = start_smtp(tls_context=server_tls, require_starttls=True)
    await SmtpMailer(smtp_settings(port), tls_context=client_tls).send(MAIL)
    assert_is_the_mail(inbox.messages()[0], MAIL)


async def test_smtp_implicit_tls_delivers(
    start_smtp: StartSmtp, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    port, inbox = start_smtp(ssl_context=server_tls)
    await SmtpMailer(smtp_settings(port, smtp_implicit_tls=True), tls_context=client_tls).send(MAIL)
    assert_is_the_mail(inbox.messages()[0], MAIL)


async def test_smtp_refuses_a_certificate_it_does_not_trust(start_smtp: StartSmtp, server_tls: ssl.SSLContext) -> None:
    """The default context verifies the chain: a self-signed development CA is not trusted."""
    port, inbox = start_smtp(tls_context=server_tls, require_starttls=True)
    with pytest.raises(MailError, match="certificate"):
        await SmtpMailer(smtp_settings(port)).send(MAIL)
    assert inbox.envelopes == []


async def test_smtp_does_not_fall_back_to_plaintext_without_starttls(start_smtp: StartSmtp) -> None:
    """A server (or an attacker in the path) that offers no STARTTLS gets no mail."""
    port, inbox = start_smtp()
    with pytest.raises(MailError):
        await SmtpMailer(smtp_settings(port)).send(MAIL)
    assert inbox.envelopes == []


def _authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: object) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    if ok:
        return AuthResult(success=True)
    # A careless server may echo what it received; the error must still not carry it.
    echoed = auth_data.password.decode() if isinstance(auth_data, LoginPassword) else ""
    return AuthResult(success=False, handled=False, message=f"535 5.7.8 Bad password {echoed}")


async def test_smtp_authenticates_over_starttls(
    start_smtp: StartSmtp, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    port, inbox = start_smtp(
        tls_context=server_tls, require_starttls=True, authenticator=_authenticator, auth_required=True
    )
    settings = smtp_settings(port, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD)
    await SmtpMailer(settings, tls_context=client_tls).send(MAIL)
    assert len(inbox.envelopes) == 1


async def test_smtp_auth_failure_is_a_mail_error_without_the_password(
    start_smtp: StartSmtp, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    port, inbox = start_smtp(
        tls_context=server_tls, require_starttls=True, authenticator=_authenticator, auth_required=True
    )
    wrong = "Wr0ng-" + SMTP_PASSWORD
    settings = smtp_settings(port, smtp_username=SMTP_USER, smtp_password=wrong)
    with pytest.raises(MailError, match="SMTPAuthenticationError") as caught:
        await SmtpMailer(settings, tls_context=client_tls).send(MAIL)
    assert wrong not in str(caught.value)
    assert "Bad password **********" in str(caught.value)  # the server's echo, redacted
    assert wrong not in repr(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    assert inbox.envelopes == []


async def test_smtp_connection_refused_is_a_mail_error_without_the_password() -> None:
    settings = smtp_settings(free_port(), smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD)
    with pytest.raises(MailError, match=r"127\.0\.0\.1") as caught:
        await SmtpMailer(settings).send(MAIL)
    assert SMTP_PASSWORD not in str(caught.value)


def test_smtp_credentials_are_never_sent_in_clear() -> None:
    settings = smtp_settings(587, smtp_starttls=False, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD)
    with pytest.raises(ConfigError, match="smtp_starttls") as caught:
        SmtpMailer(settings)
    assert SMTP_PASSWORD not in str(caught.value)


def test_build_mailer_follows_the_backend_setting(tmp_path: Path) -> None:
    outbox = build_mailer(load_settings(tmp_path / "data"))
    assert isinstance(outbox, OutboxMailer)
    assert outbox.outbox == tmp_path / "data" / "outbox"
    assert isinstance(build_mailer(load_settings(tmp_path / "data", mail={"backend": "smtp"})), SmtpMailer)


# -- texts -----------------------------------------------------------------------

LINK = "https://bastion.test/auth/verify-email?token=tok_abc123"
URL = re.compile(r"https?://\S+")


@pytest.mark.parametrize(
    ("mail", "links"),
    [
        (mail_texts.verification_mail("alice@example.com", LINK, "Acme"), [LINK]),
        (mail_texts.already_registered_mail("alice@example.com", "Acme", LINK), [LINK]),
        (mail_texts.password_reset_mail("alice@example.com", LINK, "Acme", 30), [LINK]),
        (mail_texts.lockout_mail("alice@example.com", "Acme", "2026-01-01 12:00 UTC"), []),
        (mail_texts.password_changed_mail("alice@example.com", "Acme"), []),
        (mail_texts.mfa_changed_mail("alice@example.com", "Acme", enabled=True), []),
        (mail_texts.mfa_changed_mail("alice@example.com", "Acme", enabled=False), []),
    ],
)
def test_mail_texts_carry_only_the_callers_link(mail: Mail, links: list[str]) -> None:
    """Plain text, addressed to the user, naming the service, no tracking URLs or pixels."""
    assert mail.to == "alice@example.com"
    assert "Acme" in mail.subject
    assert URL.findall(mail.text) == links
    assert "<" not in mail.text
    assert "\r" not in mail.subject
    assert "\n" not in mail.subject


def test_mail_texts_state_the_facts_they_are_given() -> None:
    assert "30 minutes" in mail_texts.password_reset_mail("a@example.com", LINK, "Acme", 30).text
    assert "2026-01-01 12:00 UTC" in mail_texts.lockout_mail("a@example.com", "Acme", "2026-01-01 12:00 UTC").text
    assert "turned on" in mail_texts.mfa_changed_mail("a@example.com", "Acme", enabled=True).text
    assert "turned off" in mail_texts.mfa_changed_mail("a@example.com", "Acme", enabled=False).text
    assert "already have" in mail_texts.already_registered_mail("a@example.com", "Acme", LINK).text
