"""Everything Bastion holds about a user, as one JSON document (GDPR art. 15
and 20): ``GET /api/v1/me/export``, the admin API's
``/admin/api/v1/users/{id}/export`` and ``bastion user export`` all build it
here. Its schema is documented in docs/privacy.md (a test checks the example
there against a real export).

No secret ever enters it, and not by filtering a row after the fact: every
query below names the columns it exports, so a password hash, a sealed TOTP
secret, a refresh-token or API-key hash, a recovery-code hash or a client
secret hash is never even read. A column added to a table later stays out
of the export until someone adds it here on purpose.

Each export is audited (``privacy:export``, subject the user, actor whoever
asked) in the transaction that reads the document.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from bastion.access.models import ApiKey, UserRole
from bastion.audit import EventTag, record_event
from bastion.audit.models import AuditEvent
from bastion.clock import Clock
from bastion.data.service import DataService
from bastion.db.database import Queries
from bastion.identity.models import RecoveryCode, User
from bastion.oauth.models import LinkedIdentity, OAuthClient, OAuthConsent, OAuthGrant
from bastion.sessions.models import Session
from bastion.uow import UnitOfWork

FORMAT = "bastion-export/v1"

# Who asked: the user themselves (the API), an admin (the admin API), the operator (the CLI).
Via = Literal["api", "admin", "cli"]
# A user's records in every collection, decrypted: collection name -> records as the API shows them.
RecordsOf = Callable[[Queries, uuid.UUID], Awaitable[Mapping[str, list[dict[str, Any]]]]]
# When a user's known devices were first and last seen (``KnownDevices.seen_by``: monitor shares
# privacy's layer, so the caller, who has the services, hands it in).
DevicesOf = Callable[[Queries, uuid.UUID], Awaitable[list[dict[str, Any]]]]


@dataclass(frozen=True)
class Sources:
    """Where the sections other domains keep come from."""

    records_of: RecordsOf
    devices_of: DevicesOf

    @classmethod
    def of(cls, services: Any) -> Sources:
        """From the running services (``app.state`` or ``runtime.Services``): their ``data`` and ``devices``."""
        return cls(records_of=records_of(services.data), devices_of=services.devices.seen_by)


class NoSuchUser(LookupError):
    """The user to export does not exist (the routes answer 404, the CLI one line)."""


# --- the queries: each names exactly the columns it exports ------------------

_PROFILE = sa.select(
    User.id,
    User.email,
    User.email_verified_at,
    User.created_at,
    User.password_changed_at,
    User.disabled,
    User.locked_until,
    User.password_reset_required,
    User.step_up_until,
    User.totp_enabled,
    # Whether a password is set, never the hash.
    User.password_hash.is_not(None).label("has_password"),
).where(User.id == sa.bindparam("user_id"))
_ROLES = sa.select(UserRole.role).where(UserRole.user_id == sa.bindparam("user_id")).order_by(UserRole.role)
_RECOVERY_CODES_LEFT = sa.select(sa.func.count()).where(
    RecoveryCode.user_id == sa.bindparam("user_id"), RecoveryCode.used_at.is_(None)
)
_SESSIONS = (
    sa.select(
        Session.id,
        Session.created_at,
        Session.last_used_at,
        Session.expires_at,
        Session.ip,
        Session.user_agent,
        Session.mfa,
        Session.revoked_at,
        Session.revoke_reason,
    )
    .where(Session.user_id == sa.bindparam("user_id"))
    .order_by(Session.created_at, Session.id)
)
_API_KEYS = (
    sa.select(
        ApiKey.id,
        ApiKey.name,
        ApiKey.scopes,
        ApiKey.created_at,
        ApiKey.expires_at,
        ApiKey.last_used_at,
        ApiKey.revoked_at,
    )
    .where(ApiKey.user_id == sa.bindparam("user_id"))
    .order_by(ApiKey.created_at, ApiKey.id)
)
_IDENTITIES = (
    sa.select(
        LinkedIdentity.id,
        LinkedIdentity.provider,
        LinkedIdentity.issuer,
        LinkedIdentity.subject,
        LinkedIdentity.email,
        LinkedIdentity.created_at,
        LinkedIdentity.last_used_at,
    )
    .where(LinkedIdentity.user_id == sa.bindparam("user_id"))
    .order_by(LinkedIdentity.created_at, LinkedIdentity.id)
)
_CONSENTS = (
    sa.select(
        OAuthConsent.client_id, OAuthClient.name.label("client_name"), OAuthConsent.scopes, OAuthConsent.created_at
    )
    .join(OAuthClient, OAuthClient.id == OAuthConsent.client_id)
    .where(OAuthConsent.user_id == sa.bindparam("user_id"))
    .order_by(OAuthConsent.created_at, OAuthConsent.client_id)
)
_GRANTS = (
    sa.select(
        OAuthGrant.id,
        OAuthGrant.client_id,
        OAuthClient.name.label("client_name"),
        OAuthGrant.scopes,
        OAuthGrant.session_id,
        OAuthGrant.auth_time,
        OAuthGrant.amr,
        OAuthGrant.created_at,
        OAuthGrant.expires_at,
        OAuthGrant.revoked_at,
        OAuthGrant.revoke_reason,
    )
    .join(OAuthClient, OAuthClient.id == OAuthGrant.client_id)
    .where(OAuthGrant.user_id == sa.bindparam("user_id"))
    .order_by(OAuthGrant.created_at, OAuthGrant.id)
)
_CLIENTS_OWNED = (
    sa.select(OAuthClient.id.label("client_id"), OAuthClient.name, OAuthClient.redirect_uris, OAuthClient.created_at)
    .where(OAuthClient.owner_id == sa.bindparam("user_id"))
    .order_by(OAuthClient.created_at, OAuthClient.id)
)
# The events naming the user, as the actor (their sign-ins, their changes) or the subject.
_EVENTS = (
    sa.select(
        AuditEvent.id,
        AuditEvent.at,
        AuditEvent.tag,
        AuditEvent.outcome,
        AuditEvent.actor_id,
        AuditEvent.subject_id,
        AuditEvent.ip,
        AuditEvent.request_id,
        AuditEvent.details,
    )
    .where(
        sa.or_(AuditEvent.subject_id == sa.bindparam("user_id"), AuditEvent.actor_id == sa.bindparam("user_id")),
        AuditEvent.purged_at.is_(None),
    )
    .order_by(AuditEvent.id)
)


_SIGNED_IN_AT = sa.select(Session.created_at).where(Session.id == sa.bindparam("session_id"))


async def signed_in_at(db: Queries, session_id: uuid.UUID) -> dt.datetime | None:
    """When the session was signed in (its ``created_at``; a refresh keeps it), or None for no such session."""
    found: dt.datetime | None = await db.value(_SIGNED_IN_AT, {"session_id": session_id})
    return found


def records_of(data: DataService) -> RecordsOf:
    """The user's records in every collection, decrypted, read in the export's transaction ``db``."""

    async def read(db: Queries, user_id: uuid.UUID) -> Mapping[str, list[dict[str, Any]]]:
        return await data.records_of_owner(user_id, db)

    return read


def _row(row: Any) -> dict[str, Any]:
    found: dict[str, Any] = row._asdict()
    return found


async def build_export(db: Queries, user_id: uuid.UUID, *, now: dt.datetime, sources: Sources) -> dict[str, Any]:
    """The export document of ``user_id`` (NoSuchUser if there is none), its values as JSON gives them."""
    params = {"user_id": user_id}
    profile = await db.one(_PROFILE, params)
    if profile is None:
        raise NoSuchUser(str(user_id))
    user = _row(profile)
    totp_enabled, has_password = user.pop("totp_enabled"), user.pop("has_password")
    user["email_verified"] = user["email_verified_at"] is not None
    user["has_password"] = bool(has_password)
    records = await sources.records_of(db, user_id)
    document = {
        "format": FORMAT,
        "exported_at": now,
        "user": user,
        "roles": [row.role for row in await db.all(_ROLES, params)],
        "mfa": {
            "totp_enabled": bool(totp_enabled),
            "recovery_codes_left": int(await db.value(_RECOVERY_CODES_LEFT, params) or 0) if totp_enabled else 0,
        },
        "sessions": [_row(row) for row in await db.all(_SESSIONS, params)],
        "api_keys": [_row(row) for row in await db.all(_API_KEYS, params)],
        "linked_identities": [_row(row) for row in await db.all(_IDENTITIES, params)],
        "oauth": {
            "consents": [_row(row) for row in await db.all(_CONSENTS, params)],
            "grants": [_row(row) for row in await db.all(_GRANTS, params)],
            "clients_owned": [_row(row) for row in await db.all(_CLIENTS_OWNED, params)],
        },
        "known_devices": await sources.devices_of(db, user_id),
        "records": {name: list(items) for name, items in sorted(records.items())},
        "audit_events": [_row(row) for row in await db.all(_EVENTS, params)],
    }
    # Through JSON and back: what the caller holds is exactly what a reader of the file gets.
    plain: dict[str, Any] = json.loads(encode(document))
    return plain


async def export_user(
    uow: UnitOfWork,
    clock: Clock,
    user_id: uuid.UUID,
    *,
    sources: Sources,
    via: Via,
    actor_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """Build ``user_id``'s export in ``uow`` and audit it (``privacy:export``)."""
    document = await build_export(uow.db, user_id, now=clock.now(), sources=sources)
    record_event(
        uow.db,
        clock,
        EventTag.PRIVACY_EXPORT,
        origin=uow.origin,
        actor_id=actor_id,
        subject_id=user_id,
        details={"via": via},
    )
    return document


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, (dt.date, uuid.UUID)):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    # Bytes among them: nothing exported is binary, and a ciphertext or hash that got here is a bug.
    raise TypeError(f"cannot export a {type(value).__name__}")


def encode(document: Mapping[str, Any]) -> bytes:
    """The document as UTF-8 JSON (times in RFC 3339 UTC, ids as strings), keys in a stable order."""
    return json.dumps(document, default=_plain, ensure_ascii=False, sort_keys=True, indent=2).encode()
