"""Mail delivery off the response path.

A response must not wait for SMTP: the wait would tell a client whether a
mail was sent (and so whether an account exists), and a slow relay would
slow sign-ups. Nor may it wait for the CPU a mail costs (composing it took
about 2 ms): a task started at once runs at the request's next await, before
its response is out, and a thread would hold the interpreter lock the
response needs. So each delivery starts after HANDOFF_SECONDS, when the
response that queued it has long gone. Failures are logged, never shown to
the client.
"""

from __future__ import annotations

import asyncio

import structlog

from bastion.mail.mailers import Mail, Mailer, MailError

log = structlog.get_logger("bastion.mail")
# Far longer than finishing a response takes, far shorter than anyone waits for a mail.
HANDOFF_SECONDS = 0.05


class Postman:
    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer
        self._pending: set[asyncio.Task[None]] = set()

    async def deliver(self, mails: list[Mail]) -> None:
        for mail in mails:
            task = asyncio.create_task(self._send(mail))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for every mail handed over so far (shutdown, tests)."""
        while self._pending:
            await asyncio.gather(*self._pending)

    async def _send(self, mail: Mail) -> None:
        await asyncio.sleep(HANDOFF_SECONDS)
        try:
            await self.mailer.send(mail)
        except MailError as exc:
            log.error("mail delivery failed", subject=mail.subject, error=str(exc))
