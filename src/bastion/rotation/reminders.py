"""Reminders to owners before their credentials expire, each sent once per expiry.

Two kinds (``KINDS``):

- ``api_key``: API keys expire (``api_keys.expires_at``, at most
  ``auth.api_key_max_days`` after creation); the key's owner is mailed. A
  disabled account's owner gets no mail (the key no longer works anyway),
  but the reminder is recorded.
- ``oauth_client_secret``: a confidential client's secret expires
  ``oauth.client_secret_lifetime`` after it was issued
  (``oauth_clients.secret_expires_at``); the client's owner
  (``owner_id``: ``oauth client create --owner``, ``set-owner``) is mailed
  or, for a client without one (registered dynamically, or its owner
  erased) or whose owner is disabled, every address of ``[alerts] mail_to``: unlike a disabled user's API key, the
  client keeps working until the secret expires, and someone must rotate
  it. With no address at all the reminder is recorded and a warning logged.

Both are mailed ``[rotation] remind_before`` ahead; a credential already
expired gets no reminder (``bastion check`` reports expired client secrets).

Once per expiry, across the cluster: a reminder is claimed by inserting its
``rotation_notices`` row (kind, id, expiry), which does nothing when the row
exists, and only the transaction whose insert took the row records the
``ROTATION_REMIND`` event and queues the mail. Two rotation jobs racing (two
instances, or a lease taken over mid-tick) both try; one row, one mail. A
credential renewed to a new expiry (a rotated secret) is a new row, so it
gets its own reminder. The mail leaves after the commit (at most once: a
mail the relay refused is logged, not retried, since its notice is already
taken).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite

from bastion.access.models import ApiKey
from bastion.audit import EventTag, record_event
from bastion.clock import Clock
from bastion.db import Database
from bastion.identity.models import User
from bastion.mail import Mail, Postman
from bastion.oauth.models import OAuthClient
from bastion.rotation.models import RotationNotice
from bastion.rotation.rewrap import ORIGIN
from bastion.uow import open_unit_of_work

log = structlog.get_logger("bastion.rotation")
API_KEY = "api_key"
CLIENT_SECRET = "oauth_client_secret"  # noqa: S105 - a kind's name, not a secret
KINDS = (API_KEY, CLIENT_SECRET)
_CLAIM = {
    "postgresql": postgresql.insert(RotationNotice).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(RotationNotice).on_conflict_do_nothing(),
}
# A tick handles at most this many of each kind; the next tick takes the rest.
_BATCH = 500


@dataclass(frozen=True)
class _Due:
    """One reminder to give: what it is about, whom the event names, and the mails it sends."""

    kind: str
    object_id: str
    expires_at: dt.datetime
    subject_id: uuid.UUID | None
    mails: tuple[Mail, ...]
    details: dict[str, Any]


async def remind_expiring(
    db: Database,
    clock: Clock,
    postman: Postman,
    *,
    remind_before: dt.timedelta,
    service: str,
    security_contacts: Sequence[str] = (),
) -> int:
    """Remind of every live API key and client secret expiring within ``remind_before``,
    once per expiry; how many reminders were given. ``security_contacts``
    (``[alerts] mail_to``) hear of the secrets of clients without an owner to tell."""
    now = clock.now()
    due = await _api_keys_due(db, now, now + remind_before, service)
    due += await _client_secrets_due(db, now, now + remind_before, service, tuple(security_contacts))
    sent = dict.fromkeys(KINDS, 0)
    for item in due:
        async with open_unit_of_work(db, ORIGIN, postman.deliver) as uow:
            claim = _CLAIM[uow.db.dialect.name].values(
                kind=item.kind, object_id=item.object_id, expires_at=item.expires_at, sent_at=now
            )
            if not await uow.db.execute(claim):
                continue  # another job took this one first
            record_event(
                uow.db, clock, EventTag.ROTATION_REMIND, origin=ORIGIN, subject_id=item.subject_id,
                details={"kind": item.kind, "id": item.object_id, "expires_at": item.expires_at.isoformat(),
                         **item.details},
            )  # fmt: skip
            uow.outbox.extend(item.mails)
            sent[item.kind] += 1
    for kind, count in sent.items():
        if count:
            log.info("expiry reminders sent", kind=kind, count=count)
    return sum(sent.values())


async def _api_keys_due(db: Database, now: dt.datetime, horizon: dt.datetime, service: str) -> list[_Due]:
    rows = await db.all(
        sa.select(ApiKey.id, ApiKey.name, ApiKey.user_id, ApiKey.expires_at, User.email, User.disabled)
        .join(User, User.id == ApiKey.user_id)
        .outerjoin(RotationNotice, _noticed(API_KEY, ApiKey.id, ApiKey.expires_at))
        .where(
            ApiKey.revoked_at.is_(None),
            ApiKey.expires_at.is_not(None),
            ApiKey.expires_at > now,
            ApiKey.expires_at <= horizon,
            RotationNotice.kind.is_(None),
        )
        .order_by(ApiKey.expires_at)
        .limit(_BATCH)
    )
    due = []
    for row in rows:
        mails: tuple[Mail, ...] = ()
        if not row.disabled:
            mails = (_api_key_mail(row.email, row.name, row.id, row.expires_at, service),)
        due.append(_Due(API_KEY, row.id, row.expires_at, row.user_id, mails, {}))
    return due


async def _client_secrets_due(
    db: Database, now: dt.datetime, horizon: dt.datetime, service: str, contacts: tuple[str, ...]
) -> list[_Due]:
    rows = await db.all(
        sa.select(OAuthClient.id, OAuthClient.name, OAuthClient.secret_expires_at, OAuthClient.owner_id)
        .add_columns(User.email, User.disabled)
        .outerjoin(User, User.id == OAuthClient.owner_id)
        .outerjoin(RotationNotice, _noticed(CLIENT_SECRET, OAuthClient.id, OAuthClient.secret_expires_at))
        .where(
            OAuthClient.secret_hash.is_not(None),
            OAuthClient.secret_expires_at.is_not(None),
            OAuthClient.secret_expires_at > now,
            OAuthClient.secret_expires_at <= horizon,
            RotationNotice.kind.is_(None),
        )
        .order_by(OAuthClient.secret_expires_at)
        .limit(_BATCH)
    )
    due = []
    for row in rows:
        mails: tuple[Mail, ...]
        if row.email is not None and not row.disabled:
            to, mails = "owner", (_client_secret_mail(row.email, row.name, row.id, row.secret_expires_at, service),)
        else:
            to = "alerts.mail_to"
            mails = tuple(
                _client_secret_mail(address, row.name, row.id, row.secret_expires_at, service, ownerless=True)
                for address in contacts
            )
            if not mails:
                log.warning(
                    "a client secret expires soon and no one can be told: the client has no owner and "
                    "alerts.mail_to is empty",
                    client_id=row.id, expires_at=row.secret_expires_at.isoformat(),
                )  # fmt: skip
        due.append(_Due(CLIENT_SECRET, row.id, row.secret_expires_at, row.owner_id, mails, {"to": to}))
    return due


def _noticed(kind: str, object_id: Any, expires_at: Any) -> Any:
    """The join condition of the notice already given for this credential at this expiry."""
    return sa.and_(
        RotationNotice.kind == kind, RotationNotice.object_id == object_id, RotationNotice.expires_at == expires_at
    )


def _when(at: dt.datetime) -> str:
    return f"{at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"


def _api_key_mail(to: str, name: str, key_id: str, expires_at: dt.datetime, service: str) -> Mail:
    return Mail(
        to=to,
        subject=f"Your {service} API key {name!r} expires soon",
        text=(
            f"Your {service} API key {name!r} (id {key_id}) expires on {_when(expires_at)}.\n\n"
            "Create a new key, move your programs to it, then revoke this one. After the expiry "
            "requests made with this key are refused.\n\n"
            "If you no longer use this key, there is nothing to do: it stops working by itself.\n"
        ),
    )


def _client_secret_mail(
    to: str, name: str, client_id: str, expires_at: dt.datetime, service: str, *, ownerless: bool = False
) -> Mail:
    why = (
        "This client has no owner to tell (or its owner's account is disabled), so this reminder "
        "goes to the security contacts (alerts.mail_to).\n\n"
        if ownerless
        else ""
    )
    return Mail(
        to=to,
        subject=f"The secret of the {service} OAuth client {name!r} expires soon",
        text=(
            f"The client secret of the {service} OAuth client {name!r} (client_id {client_id}) "
            f"expires on {_when(expires_at)}. After that the client can no longer authenticate: "
            "its token requests are refused (invalid_client).\n\n"
            "Rotate it on the server:\n\n"
            f"    bastion oauth client rotate-secret {client_id}\n\n"
            "then give the new secret to the client's deployment. The old secret stops working at "
            "once, so rotate when the client can be updated right after.\n\n"
            f"{why}"
            "If the client is no longer used, delete it (bastion oauth client delete).\n"
        ),
    )
