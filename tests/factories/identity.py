"""Accounts and sessions: users, admins with or without a second factor,
and sessions opened as the sign-in routes open them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI

from bastion.identity.models import Account
from bastion.security import totp_at
from factories import unit_of_work

PASSWORD = "tangerine-orbit-cascade-91"
NEW_PASSWORD = "velvet-quarry-lantern-47"
ADMIN = "admin@example.com"


async def create_user(
    app: FastAPI,
    email: str,
    *,
    password: str = PASSWORD,
    roles: Sequence[str] = ("user",),
    verified: bool = True,
) -> Account:
    """An account as registration plus the verification link would leave it."""
    async with unit_of_work(app) as uow:
        user: Account = await app.state.identity.create_user(uow, email, password, roles=roles, verified=verified)
    return user


async def enable_totp(app: FastAPI, user: Account) -> str:
    """Enrol and confirm TOTP for ``user`` (the code of the current step); returns the secret.

    That step's code is spent: a test that signs in with TOTP afterwards
    advances its clock to the next step first, as a real user would wait.
    """
    identity = app.state.identity
    async with unit_of_work(app) as uow:
        secret, _ = await identity.totp_begin(uow, user)
        enrolled = await identity.by_id(uow.db, user.id)  # with the secret totp_begin sealed
        await identity.totp_confirm(uow, enrolled, totp_at(secret, int(identity.clock.now().timestamp()) // 30))
    return str(secret)


async def sign_in(app: FastAPI, user: Account, *, mfa: bool = False) -> dict[str, Any]:
    """A fresh session for ``user``, as /auth/login (or, with ``mfa``, /auth/mfa)
    opens it; the same body those routes answer with."""
    assert not mfa or user.totp_enabled, "a two-factor session needs a second factor"
    async with unit_of_work(app) as uow:
        pair = await app.state.sessions.open(uow, user.id, mfa=mfa, user_agent="tests/factories")
    return {
        "access_token": pair.access_token,
        "token_type": pair.token_type,
        "expires_in": pair.expires_in,
        "refresh_token": pair.refresh_token,
    }


async def create_admin(app: FastAPI, email: str = ADMIN, *, mfa: bool = True) -> tuple[Account, str | None]:
    """A user with the ``admin`` role; with ``mfa``, TOTP on. Returns the user and its TOTP secret."""
    user = await create_user(app, email, roles=("admin",))
    if not mfa:
        return user, None
    secret = await enable_totp(app, user)
    return dataclasses.replace(user, totp_enabled=True), secret
