"""Roles, permissions and API keys.

A principal's permissions are those of its roles, read on every request so a
role change or a revoked key takes effect at once. An API key carries scopes
chosen at creation, a subset of its owner's permissions; at use it is granted
only the scopes its owner still holds.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bastion.access.errors import InvalidCredential, KeyLifetimeRefused, ScopeNotHeld, UnknownRole
from bastion.access.models import ApiKey, Role, UserRole
from bastion.access.permissions import OWN_ACCOUNT, grants
from bastion.access.principal import Principal
from bastion.audit import EventTag, record_event
from bastion.clock import Clock
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

    async def grants_of(self, db: AsyncSession, user_id: uuid.UUID) -> tuple[frozenset[str], frozenset[str]]:
        """The roles and permissions of an enabled user, in one query; InvalidCredential otherwise."""
        rows = (
            await db.execute(
                select(User.disabled, UserRole.role, Role.permissions)
                .select_from(User)
                .outerjoin(UserRole, UserRole.user_id == User.id)
                .outerjoin(Role, Role.name == UserRole.role)
                .where(User.id == user_id)
            )
        ).all()
        if not rows or rows[0].disabled:
            raise InvalidCredential
        roles = frozenset(row.role for row in rows if row.role is not None)
        return roles, frozenset(p for row in rows if row.permissions for p in row.permissions)

    async def for_access_token(
        self, connection: AsyncConnection, user_id: uuid.UUID, session_id: uuid.UUID
    ) -> Principal:
        """The principal of a verified access token, if its session is live and its user enabled.

        One statement joins the session, the user and the roles: this runs on
        every authenticated request, so it reads the sessions table directly
        instead of going through the sessions service.
        """
        now = self.clock.now()
        rows = (await connection.execute(_PRINCIPAL, {"session_id": session_id})).all()
        if not rows:
            raise InvalidSession
        live = rows[0]
        if live.user_id != user_id or live.revoked_at is not None or live.expires_at <= now or live.disabled:
            raise InvalidSession
        if now - live.last_used_at > TOUCH_INTERVAL:  # committed by the caller's transaction
            await connection.execute(update(Session).where(Session.id == session_id).values(last_used_at=now))
        return Principal(
            user_id=user_id,
            roles=frozenset(row.role for row in rows if row.role is not None),
            permissions=frozenset(p for row in rows if row.permissions for p in row.permissions),
            mfa=live.mfa,
            session_id=session_id,
        )

    # --- API keys -------------------------------------------------------

    async def create_key(
        self,
        uow: UnitOfWork,
        owner: Principal,
        *,
        name: str,
        scopes: Sequence[str],
        expires_at: dt.datetime | None,
    ) -> tuple[ApiKey, str]:
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
        key = ApiKey(
            id=key_id,
            user_id=owner.user_id,
            name=name,
            secret_hash=hash_token(secret),
            scopes=sorted(set(scopes)),
            created_at=now,
            expires_at=expires_at,
        )
        uow.db.add(key)
        record_event(
            uow.db,
            self.clock,
            EventTag.API_KEY_CREATE,
            origin=uow.origin,
            actor_id=owner.user_id,
            details={"key_id": key_id, "scopes": key.scopes},
        )
        return key, f"{API_KEY_PREFIX}_{key_id}_{secret}"

    async def keys_of(self, db: AsyncSession, user_id: uuid.UUID | None) -> Sequence[ApiKey]:
        query = select(ApiKey).where(ApiKey.revoked_at.is_(None)).order_by(ApiKey.created_at)
        if user_id is not None:
            query = query.where(ApiKey.user_id == user_id)
        return (await db.scalars(query)).all()

    async def revoke_key(
        self, uow: UnitOfWork, key_id: str, *, owner_id: uuid.UUID | None, actor_id: uuid.UUID
    ) -> bool:
        key = await uow.db.get(ApiKey, key_id)
        if key is None or key.revoked_at is not None or (owner_id is not None and key.user_id != owner_id):
            return False
        key.revoked_at = self.clock.now()
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
        revoked = await uow.db.execute(
            update(ApiKey)
            .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=self.clock.now())
            .returning(ApiKey.id)
            .execution_options(synchronize_session=False)
        )
        key_ids = sorted(revoked.scalars())
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

    async def authenticate_key(self, db: AsyncSession, token: str) -> Principal:
        """The principal of ``bsk_<id>_<secret>``; InvalidCredential for every failure."""
        prefix, _, rest = token.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != API_KEY_PREFIX or not key_id or not secret or len(key_id) > 32:
            raise InvalidCredential
        key = await db.get(ApiKey, key_id)
        # Compare even when the key is unknown, so timing does not reveal ids.
        expected = key.secret_hash if key is not None else hash_token("")
        if not constant_time_equals(hash_token(secret), expected) or key is None:
            raise InvalidCredential
        now = self.clock.now()
        # A key made before every key had an expiry lives no longer than the maximum either.
        expires_at = key.expires_at or key.created_at + self.max_key_lifetime
        if key.revoked_at is not None or expires_at <= now:
            raise InvalidCredential
        roles, held = await self.grants_of(db, key.user_id)
        if key.last_used_at is None or now - key.last_used_at > TOUCH_INTERVAL:
            key.last_used_at = now
            await db.commit()
        return Principal(
            user_id=key.user_id,
            roles=roles,
            # Only what the owner still holds: demoting the owner demotes the key.
            # The owner always holds their own account (permissions.OWN_ACCOUNT).
            permissions=frozenset(scope for scope in key.scopes if scope in OWN_ACCOUNT or grants(held, scope)),
            mfa=False,
            api_key_id=key.id,
        )

    # --- roles ----------------------------------------------------------

    async def roles(self, db: AsyncSession) -> Sequence[Role]:
        return (await db.scalars(select(Role).order_by(Role.name))).all()

    async def put_role(
        self, uow: UnitOfWork, name: str, permissions: Sequence[str], description: str, *, actor_id: uuid.UUID
    ) -> Role:
        """Create or replace the role ``name``; its holders get the new permissions on their next request."""
        role = await uow.db.get(Role, name)
        if role is None:
            role = Role(name=name, permissions=[], description="")
            uow.db.add(role)
        role.permissions = sorted(set(permissions))
        role.description = description
        record_event(
            uow.db,
            self.clock,
            EventTag.ROLE_CHANGE,
            origin=uow.origin,
            actor_id=actor_id,
            details={"role": name, "permissions": role.permissions},
        )
        return role

    async def check_roles(self, db: AsyncSession, names: Sequence[str]) -> None:
        """UnknownRole naming every one of ``names`` that is not defined.

        The one check behind every grant (admin API, ``bastion user create``
        and ``set-role``): a grant of a role nobody defined would hold no
        permission today and whatever a later role of that name is given.
        """
        known = set(await db.scalars(select(Role.name).where(Role.name.in_(names))))
        if unknown := sorted(set(names) - known):
            raise UnknownRole(unknown)

    async def set_roles(
        self, uow: UnitOfWork, user: User, names: Sequence[str], *, actor_id: uuid.UUID | None = None
    ) -> None:
        """Make ``names`` the user's roles, or change nothing if one is unknown."""
        await self.check_roles(uow.db, names)
        user.roles = [UserRole(role=name) for name in dict.fromkeys(names)]
        record_event(
            uow.db,
            self.clock,
            EventTag.USER_ROLE,
            origin=uow.origin,
            actor_id=actor_id,
            subject_id=user.id,
            details={"roles": list(names)},
        )
