"""``POST /admin/api/v1/users/{user_id}/erase``: an operator erases an account
(GDPR art. 17, on the person's request made some other way).

The same erasure as ``DELETE /api/v1/me`` and ``bastion user erase``
(``bastion.privacy.erasure``), the admin as the ``privacy:erase`` event's
actor. An admin does not erase their own account here (409: that is
``DELETE /api/v1/me``, with the password), so a slip cannot lock the last
admin out.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from bastion.access import Permission, Principal, require_mfa
from bastion.http.problems import Conflict, NotFound
from bastion.privacy.erasure import Eraser
from bastion.privacy.removal import AccountGone
from bastion.uow import origin_of

router = APIRouter(prefix="/admin/api/v1", tags=["admin"])
UsersWrite = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_USERS_WRITE))]


class Erased(BaseModel):
    # The keyed pseudonym the audit log and the erasure ledger now know the user by.
    pseudonym: str
    records: dict[str, int]
    events_redacted: int


class OwnAccount(Conflict):
    detail = "Erase your own account with DELETE /api/v1/me."


@router.post(
    "/users/{user_id}/erase",
    responses={404: {"description": "No such user"}, 409: {"description": "The caller's own account"}},
)
async def erase_user(user_id: uuid.UUID, request: Request, caller: UsersWrite) -> Erased:
    """Erase the account and everything it holds; the pseudonym it is recorded under."""
    if user_id == caller.user_id:
        raise OwnAccount
    eraser: Eraser = request.app.state.eraser
    try:
        removal = await eraser.erase(user_id, origin=origin_of(request), actor_id=caller.user_id, via="admin")
    except AccountGone:
        raise NotFound from None
    return Erased(pseudonym=removal.pseudonym, records=removal.records, events_redacted=removal.redacted)
