"""Credentials beyond sessions: API keys, and grants added to roles."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select, update

from bastion.access import Principal
from bastion.access.models import Role
from bastion.db import transaction
from factories import unit_of_work


async def principal_of(app: FastAPI, user: Any) -> Principal:
    """``user`` as a password session would present it (its roles' grants, no second factor)."""
    roles, permissions = await app.state.access.grants_of(app.state.db, user.id)
    return Principal(user_id=user.id, roles=roles, permissions=permissions, mfa=False)


async def create_api_key(
    app: FastAPI,
    owner: Any,
    *,
    scopes: Sequence[str] = ("records:*",),
    name: str = "tests",
    expires_at: dt.datetime | None = None,
) -> str:
    """A key of ``owner``'s (scopes within its grants, as the route insists); returns its one-time text."""
    caller = await principal_of(app, owner)
    async with unit_of_work(app) as uow:
        _, text = await app.state.access.create_key(uow, caller, name=name, scopes=scopes, expires_at=expires_at)
    return str(text)


async def grant(app: FastAPI, role: str, *permissions: str) -> None:
    """Add ``permissions`` to an existing role.

    Written to the model: ``AccessService.put_role`` records an admin's
    change and needs the acting admin, and this is setup with no actor.
    """
    async with transaction(app.state.db) as tx:
        found = await tx.one(select(Role.permissions).where(Role.name == role))
        assert found is not None, role
        granted = sorted({*found.permissions, *permissions})
        await tx.execute(update(Role).where(Role.name == role).values(permissions=granted))
