"""Accounts: users, recovery codes and one-time tokens.

A user's roles are rows of ``access``'s ``UserRole`` (RBAC lives in access),
read with their own query (``IdentityService.roles_of``): a user row carries
no roles. The services pass a user as an ``Account``, one row read once and
never changed in place: every change is an UPDATE that returns the new row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime
from bastion.security import aad_for


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # Stored normalised (NFKC, lower-case), so uniqueness is case-insensitive.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    email_verified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    # Wrong passwords and wrong second factors are counted apart (see
    # IdentityService._count_towards_lockout); either count can lock the account.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    failed_mfa: Mapped[int] = mapped_column(Integer, default=0)
    lockouts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    # AES-256-GCM ciphertext bound to this user (totp_secret_aad).
    totp_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    totp_last_step: Mapped[int | None] = mapped_column(Integer)

    # Set by a detection rule (bastion.monitor): until then a password sign-in
    # also needs a second factor (TOTP, or a code mailed to the address), so an
    # attacked account is not locked against its owner.
    step_up_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Set by a rule or an admin: the next sign-in must choose a new password.
    password_reset_required: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa.false())


@dataclasses.dataclass(frozen=True, slots=True)
class Account:
    """One ``users`` row, as the services take and return it (``ACCOUNT`` selects it)."""

    id: uuid.UUID
    email: str
    email_verified_at: dt.datetime | None
    password_hash: str | None
    disabled: bool
    created_at: dt.datetime
    password_changed_at: dt.datetime | None
    failed_logins: int
    failed_mfa: int
    lockouts: int
    locked_until: dt.datetime | None
    totp_secret: bytes | None
    totp_enabled: bool
    totp_last_step: int | None
    step_up_until: dt.datetime | None
    password_reset_required: bool

    @classmethod
    def of(cls, row: Any) -> Account:
        """The account of a row whose columns are ``ACCOUNT``'s, in that order."""
        return cls(*row)


# The columns of an Account, in its fields' order (a field without its column fails here, at import).
ACCOUNT: tuple[sa.ColumnElement[Any], ...] = tuple(
    User.__table__.c[field.name] for field in dataclasses.fields(Account)
)


def totp_secret_aad(user_id: uuid.UUID) -> bytes:
    """The associated data a user's sealed TOTP secret is bound to: copied to another user, it fails to open."""
    return aad_for("users", "totp_secret", str(user_id))


class RecoveryCode(Base):
    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(128))
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class OneTimeToken(Base):
    """Email verification, password reset and MFA-step tokens: stored hashed,
    single-use, expiring."""

    __tablename__ = "one_time_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    purpose: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
