"""Removing one account and everything it holds, in one transaction: the steps
an erasure and the erasure ledger's application to a restore share.

In order, inside the caller's transaction:

1. the user's data key is destroyed first and their records deleted in every
   collection (``DataService.erase_owner``; the key's delete waits on
   PostgreSQL for any record write still using it, so no record written
   meanwhile is left behind);
2. the audit events naming them are pseudonymised (``redact_events``, with
   the keyed pseudonym of the ledger): the log keeps what happened, and the
   tree still verifies;
3. the account row is deleted; its foreign keys take with it, in the same
   statement, every session and refresh token, API key, role, pending
   token, recovery code, OAuth grant, consent, authorization code, device
   code and linked identity, known device and the wrapped data key (each
   is ``ON DELETE CASCADE`` to ``users``; OAuth clients they registered are
   kept, their owner cleared). The delete raises the principals epoch
   (triggers), so every process stops accepting their tokens and keys at
   its next request;
4. one ``privacy:erase`` event, naming nobody: the pseudonym, the counts,
   how it was asked for (``self``, ``admin``, ``cli``, ``ledger``).

If the account is already gone the transaction raises ``AccountGone`` and
rolls back: two erasures of one user at once leave one erasure's work (the
second waits for the first's delete of the key, then finds no account).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa

from bastion.audit import EventTag, Origin, record_event, redact_events
from bastion.clock import Clock, SystemClock
from bastion.data.sealing import FieldSealer
from bastion.data.service import DataService
from bastion.db import Database, Transaction
from bastion.identity.models import User
from bastion.secrets import Keyrings
from bastion.security import BlindIndex, Encryptor, keyed_hashes_under_every_key

# The tables whose rows an erasure deletes (besides the collections'), for ``Database.scrub``.
SCRUBBED_TABLES = (
    "user_keys",
    "users",
    "sessions",
    "refresh_tokens",
    "api_keys",
    "user_roles",
    "recovery_codes",
    "one_time_tokens",
    "oauth_grants",
    "oauth_refresh_tokens",
    "oauth_codes",
    "oauth_consents",
    "oauth_device_codes",
    "oauth_browser_sessions",
    "oauth_identities",
    "known_devices",
    "audit_events",
)
# The context of the keyed pseudonym, apart from every other use of the "hmac" keyring.
PSEUDONYM_CONTEXT = "privacy.erasure"
_USER = sa.select(User.id, User.email).where(User.id == sa.bindparam("user_id"))
_DELETE_USER = sa.delete(User).where(User.id == sa.bindparam("user_id"))


class AccountGone(Exception):
    """There is no such account (never was, or erased meanwhile)."""


@dataclass(frozen=True)
class Removal:
    email: str
    pseudonym: str  # <kid>:<hex>, as the ledger and the audit details carry it
    records: dict[str, int] = field(default_factory=dict)
    redacted: int = 0


def pseudonym(keys: Keyrings, user_id: uuid.UUID) -> str:
    """``<kid>:<hex>`` of ``user_id`` under the active "hmac" key (the ledger's pseudonym)."""
    kid = keys.hmac.active_kid
    return f"{kid}:{keyed_hashes_under_every_key(keys.hmac, str(user_id), PSEUDONYM_CONTEXT)[kid]}"


def data_service_of(keys: Keyrings, db: Database, clock: Clock | None = None) -> DataService:
    """A DataService over ``db`` (the CLI and a restore, which have no running app)."""
    return DataService(
        clock=clock or SystemClock(),
        db=db,
        sealer=FieldSealer(Encryptor(keys.encryption), BlindIndex(keys.hmac)),
    )


def scrub_tables(data: DataService) -> list[str]:
    """Every table an erasure deletes from: ``SCRUBBED_TABLES`` and each collection's."""
    return [*SCRUBBED_TABLES, *(c.table.name for c in data.catalog.collections.values())]


async def remove_account(
    tx: Transaction,
    *,
    data: DataService,
    keys: Keyrings,
    user_id: uuid.UUID,
    origin: Origin,
    actor_id: uuid.UUID | None,
    via: str,
    ledger_line: str | None = None,
) -> Removal:
    """Erase ``user_id`` in ``tx`` (see the module's steps); AccountGone if there is none.

    ``ledger_line``, the erasure's signed ledger entry, is kept in its ``privacy:erase``
    event, committed with the erasure: ``bastion.privacy.ledger.catch_up`` appends it to
    the ledger file should the append after the commit never happen.

    After the commit, call ``data.sealer.user_keys.forget(user_id)`` (the
    in-process cache) and ``Database.scrub``.
    """
    # The data key goes first, before any lock on the account: a record write
    # racing this holds the key FOR SHARE and then needs a key-share lock on the
    # account (its owner's foreign key), so taking the account first would deadlock.
    records = await data.erase_owner(tx, user_id)
    found = await tx.one(_USER, {"user_id": user_id})
    if found is None:
        raise AccountGone
    name = pseudonym(keys, user_id)
    redacted = await redact_events(tx, user_id, now=data.clock.now(), pseudonym=name)
    if await tx.execute(_DELETE_USER, {"user_id": user_id}) != 1:
        raise AccountGone  # erased meanwhile (SQLite reads the account before taking the writer)
    record_event(
        tx,
        data.clock,
        EventTag.PRIVACY_ERASE,
        origin=origin,
        actor_id=None if actor_id == user_id else actor_id,
        details={
            "pseudonym": name,
            "via": via,
            "records": records,
            "events_redacted": redacted,
            **({"ledger_line": ledger_line} if ledger_line is not None else {}),
        },
    )
    return Removal(found.email, name, records, redacted)
