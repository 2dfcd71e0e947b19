"""Roles, permissions and API keys.

A principal's permissions are those of its roles; a role change or a revoked
key takes effect at the next request (``bastion.access.principals``). An API key carries scopes
chosen at creation, a subset of its owner's permissions; at use it is granted
only the scopes its owner still holds.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any, Protocol, cast

from sqlalchemy import bindparam, delete, insert, select, update

from bastion.access.errors import InvalidCredential, KeyLifetimeRefused, ScopeNotHeld, UnknownRole
from bastion.access.models import ApiKey, Role, UserRole
from bastion.access.permissions import OWN_ACCOUNT, grants
from bastion.access.principal import Principal
from bastion.access.principals import PrincipalCache, Remembered
from bastion.audit import EventTag, record_event
from bastion.clock import Clock
from bastion.db.database import Database, Queries, Transaction, transaction
from bastion.identity.models import User
from bastion.security import constant_time_equals, hash_token, token_bytes, token_urlsafe
from bastion.sessions.errors import InvalidSession
from bastion.sessions.models import Session
from bastion.uow import UnitOfWork

API_KEY_PREFIX = "bsk"
# Last-use times are written at most this often: a write per request would
# turn every read into a durable commit.
TOUCH_INTERVAL = dt.timedelta(minutes=1)


# Built once: composing the statement per request cost more than running it.
_GRANTS = (
    select(User.disabled, UserRole.role, Role.permissions)
    .select_from(User)
    .outerjoin(UserRole, UserRole.user_id == User.id)
    .outerjoin(Role, Role.name == UserRole.role)
    .where(User.id == bindparam("user_id"))
)
_KEY = select(ApiKey).where(ApiKey.id == bindparam("key_id"))
_TOUCH_KEY = update(ApiKey).where(ApiKey.id == bindparam("key_id")).values(last_used_at=bindparam("now"))
_TOUCH_SESSION = update(Session).where(Session.id == bindparam("session_id")).values(last_used_at=bindparam("now"))
_PRINCIPAL = (
    select(
        Session.user_id,
        Session.mfa,
        Session.revoked_at,
        Session.expires_at,
        Session.last_used_at,
        User.disabled,
        UserRole.role,
        Role.permissions,
    )
    .join(User, User.id == Session.user_id)
    .outerjoin(UserRole, UserRole.user_id == User.id)
    .outerjoin(Role, Role.name == UserRole.role)
    .where(Session.id == bindparam("session_id"))
)


class HasId(Protocol):
    """A user as any domain hands it over (a row, a dataclass): only its id matters here."""

    @property
    def id(self) -> uuid.UUID: ...


class AccessService:
    def __init__(
        self,
        *,
        clock: Clock,
        key_lifetime: dt.timedelta,
        max_key_lifetime: dt.timedelta,
    ) -> None:
        self.clock = clock
        self.key_lifetime = key_lifetime
        self.max_key_lifetime = max_key_lifetime
        self.principals = PrincipalCache()

    async def grants_of(self, db: Queries, user_id: uuid.UUID) -> tuple[frozenset[str], frozenset[str]]:
        """The roles and permissions of an enabled user, in one query; InvalidCredential otherwise."""
        rows = await db.all(_GRANTS, {"user_id": user_id})
        if not rows or rows[0].disabled:
            raise InvalidCredential
        roles = frozenset(row.role for row in rows if row.role is not None)
        return roles, frozenset(p for row in rows if row.permissions for p in row.permissions)

    async def for_access_token(self, db: Queries, user_id: uuid.UUID, session_id: uuid.UUID) -> Principal:
        """The principal of a verified access token, if its session is live and its user enabled.

        Remembered (``bastion.access.principals``) until the next change that
        concerns any principal; otherwise one statement joins the session,
        the user and the roles.
        """
        now = self.clock.now()
        epoch = await self.principals.current_epoch(db)
        known = self.principals.get(session_id, epoch)
        if known is None:
            known = await self._session_principal(db, session_id)
            self.principals.put(session_id, epoch, known)
        if known.owner != user_id or (known.expires_at is not None and known.expires_at <= now):
            raise InvalidSession
        if known.last_used_at is None or now - known.last_used_at > TOUCH_INTERVAL:
            await self._touch(db, _TOUCH_SESSION, {"session_id": session_id, "now": now})
            known.last_used_at = now
        return known.principal

    async def _session_principal(self, db: Queries, session_id: uuid.UUID) -> Remembered:
        rows = await db.all(_PRINCIPAL, {"session_id": session_id})
        if not rows:
            raise InvalidSession
        live = rows[0]
        if live.revoked_at is not None or live.disabled:
            raise InvalidSession
        principal = Principal(
            user_id=live.user_id,
            roles=frozenset(row.role for row in rows if row.role is not None),
            permissions=frozenset(p for row in rows if row.permissions for p in row.permissions),
            mfa=live.mfa,
            session_id=session_id,
        )
        return Remembered(principal, live.user_id, live.expires_at, live.last_used_at)

    # --- API keys -------------------------------------------------------

    async def create_key(
        self,
        uow: UnitOfWork,
        owner: Principal,
        *,
        name: str,
        scopes: Sequence[str],
        expires_at: dt.datetime | None,
    ) -> tuple[Any, str]:
        """A new key and its one-time full text ``bsk_<id>_<secret>``.

        Every key expires: without ``expires_at`` after ``key_lifetime``, and
        never later than ``max_key_lifetime`` from now (KeyLifetimeRefused).
        """
        beyond = [scope for scope in scopes if not owner.can(scope)]
        if beyond:
            raise ScopeNotHeld(extra={"scopes": beyond})
        now = self.clock.now()
        latest = now + self.max_key_lifetime
        expires_at = expires_at or now + self.key_lifetime
        if not now < expires_at <= latest:
            raise KeyLifetimeRefused(
                f"expires_at must be in the future and at most {self.max_key_lifetime.days} days away."
            )
        key_id = token_bytes(8).hex()
        secret = token_urlsafe(32)
        key = {
            "id": key_id,
            "user_id": owner.user_id,
            "name": name,
            "secret_hash": hash_token(secret),
            "scopes": sorted(set(scopes)),
            "created_at": now,
            "expires_at": expires_at,
        }
        created = await uow.db.changed(insert(ApiKey).returning(*ApiKey.__table__.c), key)
        record_event(
            uow.db,
            self.clock,
            EventTag.API_KEY_CREATE,
            origin=uow.origin,
            actor_id=owner.user_id,
            details={"key_id": key_id, "scopes": key["scopes"]},
        )
        return created, f"{API_KEY_PREFIX}_{key_id}_{secret}"

    async def keys_of(self, db: Queries, user_id: uuid.UUID | None) -> list[Any]:
        """The live keys (of ``user_id``, or everyone's), as rows with ApiKey's columns."""
        query = select(ApiKey).where(ApiKey.revoked_at.is_(None)).order_by(ApiKey.created_at)
        if user_id is not None:
            query = query.where(ApiKey.user_id == user_id)
        return await db.all(query)

    async def revoke_key(
        self, uow: UnitOfWork, key_id: str, *, owner_id: uuid.UUID | None, actor_id: uuid.UUID
    ) -> bool:
        key = await uow.db.one(_KEY, {"key_id": key_id})
        if key is None or key.revoked_at is not None or (owner_id is not None and key.user_id != owner_id):
            return False
        await uow.db.execute(
            update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=self.clock.now())
        )
        record_event(
            uow.db,
            self.clock,
            EventTag.API_KEY_REVOKE,
            origin=uow.origin,
            actor_id=actor_id,
            subject_id=key.user_id,
            details={"key_id": key_id},
        )
        return True

    async def revoke_keys_of(self, uow: UnitOfWork, user_id: uuid.UUID, *, reason: str) -> int:
        """Revoke every live key of ``user_id`` in one statement; how many there were."""
        revoked = await uow.db.all(
            update(ApiKey)
            .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=self.clock.now())
            .returning(ApiKey.id)
        )
        key_ids = sorted(row.id for row in revoked)
        if key_ids:
            record_event(
                uow.db,
                self.clock,
                EventTag.API_KEY_REVOKE,
                origin=uow.origin,
                subject_id=user_id,
                details={"key_ids": key_ids, "reason": reason},
            )
        return len(key_ids)

    async def authenticate_key(self, db: Queries, token: str) -> Principal:
        """The principal of ``bsk_<id>_<secret>``; InvalidCredential for every failure.

        Remembered by the hash of the whole key text, like a session's.
        """
        now = self.clock.now()
        epoch = await self.principals.current_epoch(db)
        fingerprint = ("api-key", hash_token(token))
        known = self.principals.get(fingerprint, epoch)
        if known is None:
            known = await self._key_principal(db, token)
            self.principals.put(fingerprint, epoch, known)
        if known.expires_at is not None and known.expires_at <= now:
            raise InvalidCredential
        if known.last_used_at is None or now - known.last_used_at > TOUCH_INTERVAL:
            await self._touch(db, _TOUCH_KEY, {"key_id": known.principal.api_key_id, "now": now})
            known.last_used_at = now
        return known.principal

    async def _key_principal(self, db: Queries, token: str) -> Remembered:
        prefix, _, rest = token.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != API_KEY_PREFIX or not key_id or not secret or len(key_id) > 32:
            raise InvalidCredential
        key = await db.one(_KEY, {"key_id": key_id})
        # Compare even when the key is unknown, so timing does not reveal ids.
        expected = key.secret_hash if key is not None else hash_token("")
        if not constant_time_equals(hash_token(secret), expected) or key is None:
            raise InvalidCredential
        if key.revoked_at is not None:
            raise InvalidCredential
        roles, held = await self.grants_of(db, key.user_id)
        principal = Principal(
            user_id=key.user_id,
            roles=roles,
            # Only what the owner still holds: demoting the owner demotes the key.
            # The owner always holds their own account (permissions.OWN_ACCOUNT).
            permissions=frozenset(scope for scope in key.scopes if scope in OWN_ACCOUNT or grants(held, scope)),
            mfa=False,
            api_key_id=key.id,
        )
        # A key made before every key had an expiry lives no longer than the maximum either.
        expires_at = key.expires_at or key.created_at + self.max_key_lifetime
        return Remembered(principal, key.user_id, expires_at, key.last_used_at)

    # --- roles ----------------------------------------------------------

    async def _touch(self, db: Queries, statement: Any, params: dict[str, Any]) -> None:
        """Write a last-use time: in the caller's transaction, or in one of its own."""
        if isinstance(db, Transaction):
            await db.execute(statement, params)
        else:
            async with transaction(cast(Database, db)) as tx:
                await tx.execute(statement, params)

    async def roles(self, db: Queries) -> list[Any]:
        return await db.all(select(Role).order_by(Role.name))

    async def put_role(
        self, uow: UnitOfWork, name: str, permissions: Sequence[str], description: str, *, actor_id: uuid.UUID
    ) -> Any:
        """Create or replace the role ``name``; its holders get the new permissions on their next request."""
        values = {"name": name, "permissions": sorted(set(permissions)), "description": description}
        changed = await uow.db.execute(update(Role).where(Role.name == name).values(values))
        if not changed:
            await uow.db.execute(insert(Role).values(values))
        role = await uow.db.one(select(Role).where(Role.name == name))
        assert role is not None  # noqa: S101 - written just above, in this transaction
        record_event(
            uow.db,
            self.clock,
            EventTag.ROLE_CHANGE,
            origin=uow.origin,
            actor_id=actor_id,
            details={"role": name, "permissions": role.permissions},
        )
        return role

    async def check_roles(self, db: Queries, names: Sequence[str]) -> None:
        """UnknownRole naming every one of ``names`` that is not defined.

        The one check behind every grant (admin API, ``bastion user create``
        and ``set-role``): a grant of a role nobody defined would hold no
        permission today and whatever a later role of that name is given.
        """
        known = {row.name for row in await db.all(select(Role.name).where(Role.name.in_(names)))}
        if unknown := sorted(set(names) - known):
            raise UnknownRole(unknown)

    async def set_roles(
        self, uow: UnitOfWork, user: HasId, names: Sequence[str], *, actor_id: uuid.UUID | None = None
    ) -> None:
        """Make ``names`` the user's roles, or change nothing if one is unknown."""
        await self.check_roles(uow.db, names)
        await uow.db.execute(delete(UserRole).where(UserRole.user_id == user.id))
        await uow.db.execute_many(
            insert(UserRole), [{"user_id": user.id, "role": name} for name in dict.fromkeys(names)]
        )
        record_event(
            uow.db,
            self.clock,
            EventTag.USER_ROLE,
            origin=uow.origin,
            actor_id=actor_id,
            subject_id=user.id,
            details={"roles": list(names)},
        )
