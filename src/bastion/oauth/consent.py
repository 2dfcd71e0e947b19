"""Consents: what a user allowed a client, remembered per client and scope set.

The consent page (``bastion.pages.oauth``) records one with ``remember``;
a request whose scopes the remembered ones cover is not asked again
(OpenID Connect Core §3.1.2.4). ``/api/v1/me/oauth/consents`` lists the
clients a user consented to, and ``DELETE …/{client_id}`` withdraws one:
every grant of that client for that user is revoked with it, so its access
and refresh tokens stop working (issue #13 §4).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bastion.access import Permission, Principal, require
from bastion.access.errors import PermissionDenied
from bastion.audit import EventTag, record_event
from bastion.db.database import Queries
from bastion.http.problems import NotFound
from bastion.oauth.models import OAuthClient, OAuthConsent
from bastion.oauth.service import OAuthService
from bastion.oauth.token import revoke_grants
from bastion.uow import UnitOfWork, unit_of_work

__all__ = ["remember", "router", "withdraw"]

router = APIRouter(prefix="/api/v1/me/oauth", tags=["oauth"])
Reader = Annotated[Principal, Depends(require(Permission.ME_READ))]
# Withdrawing a consent ends sessions of a kind: the permission that revokes sessions.
Keeper = Annotated[Principal, Depends(require(Permission.ME_SESSIONS))]

_OF_USER = (
    select(OAuthConsent.client_id, OAuthClient.name, OAuthConsent.scopes, OAuthConsent.created_at)
    .join(OAuthClient, OAuthClient.id == OAuthConsent.client_id)
    .where(OAuthConsent.user_id == bindparam("user_id"))
    .order_by(OAuthConsent.created_at, OAuthConsent.client_id)
)
_ONE = select(OAuthConsent.scopes).where(
    OAuthConsent.user_id == bindparam("user_id"), OAuthConsent.client_id == bindparam("client_id")
)
# Two consents racing for one client: the second finds the row and widens it.
_ADD = {
    "postgresql": postgresql_insert(OAuthConsent).on_conflict_do_nothing(),
    "sqlite": sqlite_insert(OAuthConsent).on_conflict_do_nothing(),
}
_WIDEN = (
    update(OAuthConsent)
    .where(OAuthConsent.user_id == bindparam("user_id"), OAuthConsent.client_id == bindparam("client_id"))
    .values(scopes=bindparam("scopes"))
)
_DROP = delete(OAuthConsent).where(
    OAuthConsent.user_id == bindparam("user_id"), OAuthConsent.client_id == bindparam("client_id")
)


class ConsentInfo(BaseModel):
    client_id: str
    client_name: str
    scopes: list[str]
    created_at: str


async def remember(uow: UnitOfWork, oauth: OAuthService, user_id: uuid.UUID, client_id: str, scopes: list[str]) -> None:
    """Record that ``user_id`` allowed ``client_id`` ``scopes`` (added to what it allowed before)."""
    row = {"user_id": user_id, "client_id": client_id, "scopes": scopes, "created_at": oauth.clock.now()}
    await uow.db.execute(_ADD[uow.db.dialect.name], row)
    before = await uow.db.one(_ONE, {"user_id": user_id, "client_id": client_id})
    if before is not None and not set(scopes) <= set(before.scopes):
        widened = list(dict.fromkeys([*before.scopes, *scopes]))
        await uow.db.execute(_WIDEN, {"user_id": user_id, "client_id": client_id, "scopes": widened})
    record_event(
        uow.db,
        oauth.clock,
        EventTag.OAUTH_CONSENT,
        origin=uow.origin,
        actor_id=user_id,
        details={"client_id": client_id, "scopes": scopes},
    )


async def withdraw(uow: UnitOfWork, oauth: OAuthService, user_id: uuid.UUID, client_id: str) -> bool:
    """Forget the consent and revoke the client's grants for the user; False if there was none."""
    if await uow.db.one(_ONE, {"user_id": user_id, "client_id": client_id}) is None:
        return False
    await uow.db.execute(_DROP, {"user_id": user_id, "client_id": client_id})
    revoked = await revoke_grants(
        uow.db, user_id=user_id, client_id=client_id, reason="consent_revoked", now=oauth.clock.now()
    )
    record_event(
        uow.db,
        oauth.clock,
        EventTag.OAUTH_CONSENT_REVOKE,
        origin=uow.origin,
        actor_id=user_id,
        details={"client_id": client_id, "grants": revoked},
    )
    return True


async def list_consents(db: Queries, user_id: uuid.UUID) -> list[ConsentInfo]:
    return [
        ConsentInfo(
            client_id=r.client_id, client_name=r.name, scopes=list(r.scopes), created_at=r.created_at.isoformat()
        )
        for r in await db.all(_OF_USER, {"user_id": user_id})
    ]


def _oauth(request: Request) -> OAuthService:
    service: OAuthService = request.app.state.oauth
    return service


def _account(caller: Principal) -> uuid.UUID:
    """The caller's own account; a client acting as itself (client credentials) has none."""
    if caller.user_id is None:
        raise PermissionDenied
    return caller.user_id


@router.get("/consents")
async def my_consents(caller: Reader, request: Request) -> list[ConsentInfo]:
    """The clients the caller consented to, with the scopes allowed."""
    return await list_consents(request.app.state.db, _account(caller))


@router.delete("/consents/{client_id}", status_code=204)
async def withdraw_consent(client_id: str, caller: Keeper, request: Request) -> Response:
    """Withdraw a consent: the client's grants for the caller, and their tokens, are revoked."""
    async with unit_of_work(request) as uow:
        if not await withdraw(uow, _oauth(request), _account(caller), client_id[:64]):
            raise NotFound
    return Response(status_code=204)


_WORDS = {
    "openid": "Know who you are (your account's identifier)",
    "profile": "See your profile",
    "email": "See your email address",
    "offline_access": "Keep access while you are not using it",
    "me:read": "See your account and its sessions",
    "records:*": "Read and change all your records",
}
_OPS = {"list": "List", "read": "Read", "create": "Create", "update": "Change", "delete": "Delete"}


def describe_scope(scope: str) -> str:
    """A scope in words, for the consent page."""
    if scope in _WORDS:
        return _WORDS[scope]
    parts = scope.split(":")
    if len(parts) == 3 and parts[0] == "records":
        collection, op = parts[1], parts[2]
        if op == "*":
            return f"Read and change your {collection} records"
        return f"{_OPS.get(op, op.capitalize())} your {collection} records"
    return scope
