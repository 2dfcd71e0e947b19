"""The development outbox read back: each ``.eml`` file the ``OutboxMailer``
wrote, decoded (quoted-printable and all) into what a reader would see."""

from __future__ import annotations

import email.policy
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path

_LINK = re.compile(r"https?://[^\s<>\"]+")


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
    """The outbox's mails (to ``to`` only, if given), newest first: file names start with their UTC time."""
    parser = BytesParser(policy=email.policy.default)
    found = []
    for path in sorted(outbox.glob("*.eml"), reverse=True):
        message = parser.parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)  # noqa: S101 - policy.default builds EmailMessage
        if to is not None and str(message["To"]).lower() != to.lower():
            continue
        body = message.get_body(preferencelist=("plain",))
        date = message["Date"]
        found.append(
            OutboxMail(
                path=path,
                to=str(message["To"]),
                subject=str(message["Subject"]),
                date=f"{parsedate_to_datetime(date):%Y-%m-%d %H:%M:%S %Z}" if date else "",
                text=body.get_content() if isinstance(body, EmailMessage) else "",
            )
        )
    return found
