"""``bastion mail list|show``: the development outbox, read back decoded.

The outbox mailer (``bastion.identity.mail.OutboxMailer``) stores each mail
as an ``.eml`` file, quoted-printable and all; these commands print what a
reader would see, links included, so a developer can open a verification or
reset link without an SMTP server. They print to the terminal only: the
links carry live tokens, and nothing here logs.
"""

from __future__ import annotations

import email.policy
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bastion.cliutil import CommandError, DataDir, one_line_errors, out
from bastion.settings import Settings, load_settings

mail = typer.Typer(help='Read the development outbox (mail.backend = "outbox").', no_args_is_help=True)

_LINK = re.compile(r"https?://[^\s<>\"]+")
To = Annotated[str | None, typer.Option("--to", help="Only mails to this address.")]


@dataclass(frozen=True)
class OutboxMail:
    path: Path
    to: str
    subject: str
    date: str
    text: str

    @property
    def links(self) -> list[str]:
        return _LINK.findall(self.text)


def read_outbox(outbox: Path, to: str | None = None) -> list[OutboxMail]:
    """The outbox's mails, newest first (file names start with their UTC time)."""
    parser = BytesParser(policy=email.policy.default)
    found = []
    for path in sorted(outbox.glob("*.eml"), reverse=True):
        message = parser.parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)  # noqa: S101 - policy.default builds EmailMessage
        if to is not None and str(message["To"]).lower() != to.lower():
            continue
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if isinstance(body, EmailMessage) else ""
        date = message["Date"]
        found.append(
            OutboxMail(
                path=path,
                to=str(message["To"]),
                subject=str(message["Subject"]),
                date=f"{parsedate_to_datetime(date):%Y-%m-%d %H:%M:%S %Z}" if date else "",
                text=text,
            )
        )
    return found


def _outbox(settings: Settings) -> Path:
    if settings.mail.backend != "outbox":
        raise CommandError(f'mail.backend is "{settings.mail.backend}": mail goes to the relay and none is kept here')
    return settings.data_dir / "outbox"


@mail.command("list")
def list_mails(data_dir: DataDir = None, to: To = None) -> None:
    """List the outbox's mails, newest first (number 1 is the latest)."""
    with one_line_errors():
        mails = read_outbox(_outbox(load_settings(data_dir)), to)
    if not mails:
        out.print("the outbox is empty")
        return
    table = Table("#", "date", "to", "subject")
    for number, found in enumerate(mails, start=1):
        table.add_row(str(number), found.date, found.to, found.subject)
    out.print(table)


@mail.command("show")
def show_mail(
    number: Annotated[int, typer.Argument(min=1, help="Which mail, counted from the latest (1).")] = 1,
    data_dir: DataDir = None,
    to: To = None,
) -> None:
    """Print one mail decoded, with its links (by default the latest)."""
    with one_line_errors():
        mails = read_outbox(_outbox(load_settings(data_dir)), to)
        if number > len(mails):
            raise CommandError(f"the outbox holds {len(mails)} matching mail(s), not {number}")
    found = mails[number - 1]
    lines = [f"File: {found.path.name}", f"Date: {found.date}", f"To: {found.to}", f"Subject: {found.subject}", ""]
    lines.append(found.text)
    if found.links:
        lines += ["Links:", *(f"  {link}" for link in found.links)]
    # Plain text: a mail's brackets are not rich markup, and a link must not wrap.
    out.print("\n".join(lines), highlight=False, markup=False, crop=False, overflow="ignore")
