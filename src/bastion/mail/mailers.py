"""Outgoing mail: a development outbox of ``.eml`` files, or SMTP submission.

Messages are RFC 5322 (``email.message.EmailMessage``); SMTP submission
upgrades with STARTTLS (RFC 3207) or uses implicit TLS (RFC 8314) and always
verifies the server's certificate and name.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from bastion.security import token_bytes
from bastion.settings import ConfigError, MailSettings, Settings

if TYPE_CHECKING:
    from types import ModuleType


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str


class MailError(Exception):
    """A mail could not be handed over; the message never carries credentials."""


class Mailer(Protocol):
    async def send(self, mail: Mail) -> None:
        """Hand ``mail`` over for delivery (outbox file or SMTP server).

        Raises :class:`MailError` if it was not accepted, including when a
        header would carry a line break (header injection).
        """
        ...


class OutboxMailer:
    """Development mailer: each mail becomes a ``.eml`` file in ``outbox``.

    Names are ``<UTC timestamp>-<random>.eml`` so a listing sorts by time, and
    files are created exclusively with mode 0600: they hold live sign-up and
    reset links.
    """

    def __init__(self, outbox: Path, sender: str) -> None:
        self.outbox = outbox
        self.sender = sender

    async def send(self, mail: Mail) -> None:
        message = _message(mail, self.sender)
        try:
            await asyncio.to_thread(self._write, message.as_bytes())
        except OSError as exc:
            raise MailError(f"cannot write to the outbox {self.outbox}: {exc.strerror}") from None

    def _write(self, data: bytes) -> None:
        self.outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}-{token_bytes(8).hex()}.eml"
        fd = os.open(self.outbox / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)


class SmtpMailer:
    """Submission to an SMTP relay with aiosmtplib, one connection per mail.

    ``tls_context`` replaces the system trust store (tests, private CAs); the
    default verifies the certificate chain and host name.
    """

    def __init__(self, settings: MailSettings, *, tls_context: ssl.SSLContext | None = None) -> None:
        if settings.smtp_username and not (settings.smtp_starttls or settings.smtp_implicit_tls):
            raise ConfigError(
                "mail.smtp_username is set but mail.smtp_starttls and mail.smtp_implicit_tls are off: "
                "the SMTP password would cross the network in clear"
            )
        self.settings = settings
        self.tls_context = tls_context or ssl.create_default_context()
        # Imported here, when SMTP is configured, not by every process that
        # can queue mail (dev's outbox needs none of it).
        import aiosmtplib

        self.smtp: ModuleType = aiosmtplib

    async def send(self, mail: Mail) -> None:
        s = self.settings
        message = _message(mail, s.sender)
        password = s.smtp_password.get_secret_value() if s.smtp_password else None
        try:
            await self.smtp.send(
                message,
                # The envelope names exactly one recipient, whatever the header parser
                # would make of the To field.
                recipients=[mail.to],
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=password,
                use_tls=s.smtp_implicit_tls,
                # STARTTLS is required, not opportunistic: a server (or a man in the
                # middle) that does not offer it gets no mail rather than plaintext.
                start_tls=s.smtp_starttls and not s.smtp_implicit_tls,
                tls_context=self.tls_context,
                timeout=s.smtp_timeout,
            )
        except (self.smtp.SMTPException, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
        else:
            return
        if password:
            detail = detail.replace(password, "**********")
        # Raised outside the except block so the original exception, which may
        # quote the server's reply verbatim, is not attached as its context.
        raise MailError(f"SMTP delivery via {s.smtp_host}:{s.smtp_port} failed: {detail}")


def build_mailer(settings: Settings) -> Mailer:
    """The mailer ``mail.backend`` names; the outbox lives in the data directory."""
    if settings.mail.backend == "smtp":
        return SmtpMailer(settings.mail)
    return OutboxMailer(settings.data_dir / "outbox", settings.mail.sender)


def _message(mail: Mail, sender: str) -> EmailMessage:
    # EmailMessage's default policy refuses CR and LF in header values, which
    # is what stops a crafted subject or address from adding headers.
    message = EmailMessage()
    try:
        message["From"] = sender
        message["To"] = mail.to
        message["Subject"] = mail.subject
    except ValueError as exc:
        raise MailError(f"refusing to build the mail: {exc}") from None
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    # make_msgid would otherwise look up (and reveal) this host's name.
    message["Message-ID"] = make_msgid(domain=parseaddr(sender)[1].rpartition("@")[2] or "localhost")
    message.set_content(mail.text)
    return message
