"""``GET /api/v1/me/export``: the signed-in user's own export (docs/privacy.md).

Only a session (never an API key or an OAuth client's token, whatever its
scopes) whose sign-in is at most ``[privacy] export_max_auth_age`` old. A
session's sign-in time is its ``created_at``: a refresh rotates the tokens
of the same session and keeps it, so refreshing does not make an old sign-in
recent again. A refusal is audited too (``privacy:export``, denied).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from bastion.access import Permission, Principal, require
from bastion.audit import EventTag, Outcome, record_event
from bastion.http.throttle import Throttle
from bastion.privacy.errors import SessionOnly, SignInAgain
from bastion.privacy.export import Sources, encode, export_user, signed_in_at
from bastion.uow import unit_of_work

router = APIRouter(prefix="/api/v1", tags=["privacy"])
# An export reads every table about the account: ten an hour is plenty for its owner, and bounds
# what a stolen fresh session can make the server do (429 beyond; ASVS V2.4.1).
EXPORT_BY_ACCOUNT = Throttle("privacy:export:account", "10/hour", key=None)
Reader = Annotated[Principal, Depends(require(Permission.ME_READ))]

EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The export document (docs/privacy.md)", "content": {"application/json": {}}},
    401: {"description": "Not authenticated"},
    403: {"description": "Not a session, or its sign-in is too old: sign in again"},
    429: {"description": "Rate limited"},
}


def attachment(document: dict[str, Any]) -> Response:
    """The document as a JSON download named after the user."""
    name = f"bastion-export-{document['user']['id']}.json"
    return Response(
        encode(document),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/me/export", response_class=Response, responses=EXPORT_RESPONSES)
async def export_me(caller: Reader, request: Request) -> Response:
    state = request.app.state
    async with unit_of_work(request) as uow:
        user_id = caller.account_id
        refusal: SessionOnly | SignInAgain | None = None
        if caller.api_key_id is not None or caller.client_id is not None or caller.session_id is None:
            refusal = SessionOnly()
        else:
            since = await signed_in_at(uow.db, caller.session_id)
            max_age = dt.timedelta(seconds=state.settings.privacy.export_max_auth_age)
            if since is None or state.clock.now() - since > max_age:
                refusal = SignInAgain()
        if refusal is not None:
            reason = "not_a_session" if isinstance(refusal, SessionOnly) else "sign_in_too_old"
            record_event(
                uow.db,
                state.clock,
                EventTag.PRIVACY_EXPORT,
                origin=uow.origin,
                outcome=Outcome.DENIED,
                actor_id=user_id,
                details={"via": "api", "reason": reason},
            )
            raise refusal
        await EXPORT_BY_ACCOUNT.hit(request, str(user_id))
        document = await export_user(uow, state.clock, user_id, sources=Sources.of(state), via="api", actor_id=user_id)
    return attachment(document)
