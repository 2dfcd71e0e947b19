"""``bastion mail list|show``: the development outbox, read back decoded.

The outbox mailer stores each mail as an ``.eml`` file, quoted-printable and
all; these commands print what a reader would see, links included, so a
developer can open a verification or reset link without an SMTP server.
They print to the terminal only: the links carry live tokens, and nothing
here logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bastion.cli.common import CommandError, DataDir, one_line_errors, out

if TYPE_CHECKING:
    from bastion.mail.outbox import OutboxMail

mail = typer.Typer(help='Read the development outbox (mail.backend = "outbox").', no_args_is_help=True)
To = Annotated[str | None, typer.Option("--to", help="Only mails to this address.")]


def _mails(data_dir: Path | None, to: str | None) -> list[OutboxMail]:
    # Imported here, like every command's services, so `bastion --help` stays light.
    from bastion.mail.outbox import read_outbox
    from bastion.settings import load_settings

    settings = load_settings(data_dir)
    if settings.mail.backend != "outbox":
        raise CommandError(f'mail.backend is "{settings.mail.backend}": mail goes to the relay and none is kept here')
    return read_outbox(settings.data_dir / "outbox", to)


@mail.command("list")
def list_mails(data_dir: DataDir = None, to: To = None) -> None:
    """List the outbox's mails, newest first (number 1 is the latest)."""
    from rich.table import Table

    with one_line_errors():
        mails = _mails(data_dir, to)
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
        mails = _mails(data_dir, to)
        if number > len(mails):
            raise CommandError(f"the outbox holds {len(mails)} matching mail(s), not {number}")
    found = mails[number - 1]
    lines = [f"File: {found.path.name}", f"Date: {found.date}", f"To: {found.to}", f"Subject: {found.subject}", ""]
    lines.append(found.text)
    if found.links:
        lines += ["Links:", *(f"  {link}" for link in found.links)]
    # Plain text: a mail's brackets are not rich markup, and a link must not wrap.
    out.print("\n".join(lines), highlight=False, markup=False, crop=False, overflow="ignore")
