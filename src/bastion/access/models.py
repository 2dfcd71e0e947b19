"""RBAC's tables: roles, the roles each user holds, and API keys."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime


class Role(Base):
    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    permissions: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(String(200), default="")


class UserRole(Base):
    __tablename__ = "user_roles"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    # No foreign key to roles.name (adding one needs a migration of existing
    # rows); every grant goes through AccessService.check_roles instead.
    role: Mapped[str] = mapped_column(String(64), primary_key=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    # The public half of ``bsk_<id>_<secret>``: lets a key be found by id and
    # then checked in constant time, instead of searching by secret.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    secret_hash: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Epoch(Base):
    """A counter that database triggers raise on every change of what a cached value depends on.

    ``principals`` rises with every change that can make a cached principal
    wrong (a session revoked, a user disabled or removed, a role granted,
    withdrawn or redefined, an API key revoked), whoever makes it: this
    process, another worker, another instance, the command line, an
    extension's SQL. See ``bastion.access.principals``.
    """

    __tablename__ = "epochs"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)
