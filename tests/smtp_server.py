"""A real SMTP server for the tests: aiosmtpd on 127.0.0.1, keeping what it accepts and when."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class Inbox:
    """An aiosmtpd handler that keeps every envelope it accepts, with when it arrived;
    ``refuse = True`` answers 451 (a server that asks to try again later)."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.arrived: list[float] = []  # time.monotonic() of each envelope
        self.refuse = False

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        if self.refuse:
            return "451 Try again later"
        self.envelopes.append(envelope)
        self.arrived.append(time.monotonic())
        return "250 Message accepted"

    def messages(self) -> list[EmailMessage]:
        parser = BytesParser(policy=policy.default)
        return [parser.parsebytes(e.original_content or b"") for e in self.envelopes]  # type: ignore[misc]

    @property
    def arrivals(self) -> list[tuple[float, EmailMessage]]:
        return list(zip(self.arrived, self.messages(), strict=True))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def smtp_server(**parameters: Any) -> Iterator[tuple[int, Inbox]]:
    """A server on a free port; keyword arguments go to its Controller (TLS, authentication)."""
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **parameters)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()
