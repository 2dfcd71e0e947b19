"""``DELETE /api/v1/me``: the account owner erases their account (GDPR art. 17).

Only a session may ask (an API key or an OAuth access token acts for the
account, it is not its owner: 403), and only with the password again and,
when two-factor authentication is on, a second factor in the same request
(ASVS V7.5.1: re-authentication before a sensitive change). Throttled and
counted as a sign-in; wrong answers are the sign-in's generic 401 and erase
nothing. On success the account is gone (204) and a mail confirms it.
"""

from __future__ import annotations

from typing import Annotated, Self

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field, model_validator

from bastion.access import Principal, authenticated
from bastion.http.problems import Forbidden
from bastion.identity.errors import LoginFailed
from bastion.identity.schemas import Password, Strict
from bastion.identity.service import IdentityService, SecondFactor
from bastion.identity.throttle import LOGIN_BY_ACCOUNT, LOGIN_BY_ADDRESS, account_key
from bastion.privacy.erasure import Eraser
from bastion.privacy.removal import AccountGone
from bastion.uow import origin_of, unit_of_work

router = APIRouter(prefix="/api/v1", tags=["privacy"])
Caller = Annotated[Principal, Depends(authenticated)]


class ErasureRequest(Strict):
    password: str = Password
    # The second factor, when two-factor authentication is on: a TOTP code or a recovery code.
    code: str | None = Field(None, min_length=6, max_length=10)
    recovery_code: str | None = Field(None, min_length=8, max_length=32)

    @model_validator(mode="after")
    def _at_most_one(self) -> Self:
        if self.code is not None and self.recovery_code is not None:
            raise ValueError("give code or recovery_code, not both")
        return self


class NotTheOwner(Forbidden):
    detail = "Only the account's owner, signed in with a session, can erase the account."


@router.delete(
    "/me",
    status_code=204,
    dependencies=[Depends(LOGIN_BY_ADDRESS)],
    responses={
        401: {"description": "Wrong password or second factor, or not authenticated"},
        403: {"description": "An API key or OAuth access token"},
        429: {"description": "Rate limited"},
    },
)
async def erase_me(body: ErasureRequest, caller: Caller, request: Request) -> Response:
    """Erase the caller's account and everything it holds; 204 once done."""
    if caller.session_id is None or caller.api_key_id is not None or caller.client_id is not None:
        raise NotTheOwner
    identity: IdentityService = request.app.state.identity
    eraser: Eraser = request.app.state.eraser
    factor = None
    if body.code is not None or body.recovery_code is not None:
        factor = SecondFactor(body.code, body.recovery_code)
    # The proof commits on its own (a wrong answer still counts towards the lockout),
    # before the erasure's transaction, so no event naming the user lands after the redaction.
    async with unit_of_work(request) as uow:
        user = await identity.by_id(uow.db, caller.account_id)
        if user is None or user.disabled:
            raise LoginFailed
        await LOGIN_BY_ACCOUNT.hit(request, account_key(user.email))
        await identity.confirm_erasure(uow, user, body.password, factor)
    try:
        await eraser.erase(user.id, origin=origin_of(request), actor_id=user.id, via="self")
    except AccountGone:
        raise LoginFailed from None  # erased meanwhile, by a request racing this one
    return Response(status_code=204)
