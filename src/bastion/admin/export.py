"""``GET /admin/api/v1/users/{user_id}/export``: an admin hands a user their data.

The same document as the user's own ``GET /api/v1/me/export``
(docs/privacy.md), for a request made through another channel (a letter, a
support ticket). It hands over every record of the user, decrypted, so it
needs its own ``admin:users:export`` (the admin role has it; ``admin:users:read``
alone does not reach it) from a two-factor session, like every admin route, and
is audited with the admin as actor and the user as subject.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from bastion.access import Permission, Principal, require_mfa
from bastion.http.problems import NotFound
from bastion.privacy.export import NoSuchUser, Sources, export_user
from bastion.privacy.export_routes import EXPORT_RESPONSES, attachment
from bastion.uow import unit_of_work

router = APIRouter(prefix="/admin/api/v1", tags=["admin"])
UsersExport = Annotated[Principal, Depends(require_mfa(Permission.ADMIN_USERS_EXPORT))]


@router.get(
    "/users/{user_id}/export",
    response_class=Response,
    responses={
        **EXPORT_RESPONSES,
        403: {"description": "Not a session with admin:users:export and two factors"},
        404: {"description": "No such user"},
    },
)
async def export_user_data(user_id: uuid.UUID, request: Request, caller: UsersExport) -> Response:
    state = request.app.state
    async with unit_of_work(request) as uow:
        try:
            document = await export_user(
                uow, state.clock, user_id, sources=Sources.of(state), via="admin", actor_id=caller.user_id
            )
        except NoSuchUser:
            raise NotFound("No such user.") from None
    return attachment(document)
