"""The user's side of the device authorization grant (RFC 8628 §3.3).

The device shows a user code and ``verification_uri``
(``/oauth2/device/verify``); the user, signed in on the hosted pages,
enters the code, sees which client asks for what, and allows or denies it.
The decision is written once onto the ``OAuthDeviceCode`` row (``user_id``
with ``approved_at`` or ``denied_at``, claimed with one compare-and-set),
and the device's polling at the token endpoint (``oauth/token.py``) picks it up.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Update, bindparam, select

from bastion.audit import EventTag, record_event
from bastion.db.claims import claim, compare_and_set
from bastion.db.database import Queries
from bastion.oauth.browser import BrowserSessionRow
from bastion.oauth.models import OAuthClient, OAuthDeviceCode
from bastion.oauth.service import OAuthService
from bastion.uow import UnitOfWork

__all__ = ["DeviceRequest", "decide", "pending"]

_PENDING = (
    select(OAuthDeviceCode.user_code, OAuthDeviceCode.scopes, OAuthClient.name)
    .join(OAuthClient, OAuthClient.id == OAuthDeviceCode.client_id)
    .where(
        OAuthDeviceCode.user_code == bindparam("user_code"),
        OAuthDeviceCode.expires_at > bindparam("now"),
        OAuthDeviceCode.approved_at.is_(None),
        OAuthDeviceCode.denied_at.is_(None),
        OAuthDeviceCode.used_at.is_(None),
    )
)


def _decision(column: str) -> Update:
    return compare_and_set(
        OAuthDeviceCode,
        OAuthDeviceCode.user_code == bindparam("user_code"),
        OAuthDeviceCode.expires_at > bindparam("now"),
        OAuthDeviceCode.approved_at.is_(None),
        OAuthDeviceCode.denied_at.is_(None),
        OAuthDeviceCode.used_at.is_(None),
        values={OAuthDeviceCode.user_id: bindparam("user_id"), OAuthDeviceCode.__table__.c[column]: bindparam("now")},
        returning=[OAuthDeviceCode.client_id],
    )


_APPROVE = _decision("approved_at")
_DENY = _decision("denied_at")


@dataclass(frozen=True)
class DeviceRequest:
    user_code: str
    client_name: str
    scopes: list[str]


async def pending(db: Queries, oauth: OAuthService, user_code: str) -> DeviceRequest | None:
    """The undecided, unexpired device request with ``user_code``, or None."""
    row = await db.one(_PENDING, {"user_code": user_code, "now": oauth.clock.now()})
    return None if row is None else DeviceRequest(row.user_code, row.name, list(row.scopes))


async def decide(
    uow: UnitOfWork, oauth: OAuthService, user_code: str, browser: BrowserSessionRow, *, allow: bool
) -> bool:
    """Record the signed-in user's decision once; False if the code is unknown, expired or decided."""
    statement = _APPROVE if allow else _DENY
    decided = await claim(
        uow.db, statement, {"user_code": user_code, "user_id": browser.user_id, "now": oauth.clock.now()}
    )
    if decided is None:
        return False
    record_event(
        uow.db,
        oauth.clock,
        EventTag.OAUTH_DEVICE_DECISION,
        origin=uow.origin,
        actor_id=browser.user_id,
        details={"client_id": decided.client_id, "approved": allow},
    )
    return True
