"""Erasing a user (GDPR art. 17): crypto-shredding, the account and all it holds
removed, the audit log pseudonymised, the erasure ledger extended.

:meth:`Eraser.erase` is the one way in, for ``DELETE /api/v1/me``, ``bastion
user erase`` and the admin API alike:

1. one transaction removes the account (``bastion.privacy.removal``): the
   data key is destroyed, the records in every collection deleted, the audit
   events pseudonymised, the account and everything hanging from it deleted,
   one ``privacy:erase`` event recorded. Two erasures of one user at once:
   one does it, the other finds no account (``AccountGone``) and changes
   nothing;
2. after the commit, this process forgets the cached key, the entry is
   appended to the data directory's erasure ledger (so a restore of an
   older backup erases the user again), and the database is scrubbed
   (SQLite: the write-ahead log truncated, deleted rows having been zeroed
   by ``secure_delete``; PostgreSQL: VACUUM of the tables it deleted from);
3. ``on_erased`` runs (the runtime wires the backups' ledger sync there, which
   copies the ledger beside the backups in every destination), and a mail
   confirms the erasure to the address the account had.

The signed ledger line is made before the transaction and committed with
the erasure, in its ``privacy:erase`` event; the file is appended (and
fsynced) straight after the commit. Should that append fail (a full disk, a
read-only data directory) or never run (the process died in between), the
line is not lost: ``bastion.privacy.ledger.catch_up`` appends what the
events hold and the file lacks, at ``serve``'s start, with each retention
run and before each backup. A failed append does not undo the erasure nor
stop the scrub, the hook or the mail: it is logged as an error and recorded
as a failed ``privacy:erase`` event (docs/privacy.md).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bastion.audit import EventTag, Origin, Outcome, record_event
from bastion.data.service import DataService
from bastion.db import Database, transaction
from bastion.logging import get_logger
from bastion.mail import Mail, Postman
from bastion.privacy.ledger import new_entry, write_lines
from bastion.privacy.removal import AccountGone, Removal, remove_account, scrub_tables
from bastion.secrets import Keyrings, checkpoint_origin
from bastion.settings import Settings

log = get_logger(__name__)

__all__ = ["AccountGone", "Eraser", "Removal", "erased_mail"]

Via = str  # "self" | "admin" | "cli"


def erased_mail(to: str, service: str) -> Mail:
    return Mail(
        to=to,
        subject=f"Your {service} account was erased",
        text=(
            f"Your {service} account and the data it held were erased, as asked.\n\n"
            "Its records can no longer be read from this service or from its backups.\n"
            "If you did not ask for this, contact the service's operator.\n"
        ),
    )


@dataclass
class Eraser:
    settings: Settings
    keys: Keyrings
    db: Database
    data: DataService
    postman: Postman
    # Called after every erasure, once the ledger has its line (the backups' ledger sync).
    on_erased: Callable[[], Awaitable[None]] | None = None

    async def erase(self, user_id: uuid.UUID, *, origin: Origin, actor_id: uuid.UUID | None, via: Via) -> Removal:
        """Erase ``user_id`` (see the module's steps); AccountGone if there is no such account."""
        entry = new_entry(self.keys, checkpoint_origin(self.settings), user_id, self.data.clock.now())
        async with transaction(self.db) as tx:
            removal = await remove_account(
                tx,
                data=self.data,
                keys=self.keys,
                user_id=user_id,
                origin=origin,
                actor_id=actor_id,
                via=via,
                ledger_line=entry.line,
            )
        self.data.sealer.user_keys.forget(user_id)
        try:
            await asyncio.to_thread(write_lines, self.settings, [entry.line])
        except OSError as exc:
            await self._ledger_failed(removal, entry.line, exc, origin=origin, actor_id=actor_id, user_id=user_id)
        try:
            if not await self.db.scrub(scrub_tables(self.data)):
                log.warning("erasure: the write-ahead log could not be truncated yet (a reader held it)")
        except Exception as exc:  # noqa: BLE001 - the erasure is done; VACUUM or the checkpoint runs again later
            log.warning("erasure: scrubbing the database after the erasure failed", error=type(exc).__name__)
        if self.on_erased is not None:
            try:
                await self.on_erased()
            except Exception as exc:  # noqa: BLE001 - the erasure is done; the copy is retried by the next backup
                log.error("erasure: copying the ledger beside the backups failed", error=type(exc).__name__)
        await self.postman.deliver([erased_mail(removal.email, self.settings.auth.service_name)])
        return removal

    async def _ledger_failed(
        self,
        removal: Removal,
        line: str,
        exc: OSError,
        *,
        origin: Origin,
        actor_id: uuid.UUID | None,
        user_id: uuid.UUID,
    ) -> None:
        """The erasure is committed but its ledger line is not written: say so in the log and
        in a failed ``privacy:erase`` event holding the signed line (pseudonyms only), which
        the operator appends to the ledger by hand (docs/privacy.md)."""
        log.error("erasure: appending the erasure ledger failed", error=type(exc).__name__)
        async with transaction(self.db) as tx:
            record_event(
                tx,
                self.data.clock,
                EventTag.PRIVACY_ERASE,
                origin=origin,
                outcome=Outcome.FAILURE,
                actor_id=actor_id if actor_id != user_id else None,
                details={"step": "ledger", "pseudonym": removal.pseudonym, "ledger_line": line},
            )
