"""Dependencies shared by routes: who is calling, from where, in which unit of work."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from fastapi import Request

from bastion.audit import Origin
from bastion.http.problems import Forbidden, Unauthorized
from bastion.sessions.service import Principal
from bastion.work import UnitOfWork, unit_of_work


def origin_of(request: Request) -> Origin:
    return Origin(
        ip=request.client.host if request.client else None,
        request_id=request.state.request_id,
        user_agent=request.headers.get("user-agent", "")[:256],
    )


def work(request: Request) -> AbstractAsyncContextManager[UnitOfWork]:
    state = request.app.state
    return unit_of_work(state.sessionmaker, origin_of(request), state.postman.deliver)


async def principal(request: Request) -> Principal:
    """The caller of a request with a valid bearer access token and a live session (else 401)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(headers={"WWW-Authenticate": "Bearer"})
    try:
        async with request.app.state.sessionmaker() as db:
            found: Principal = await request.app.state.sessions.authenticate(db, token.strip())
    except Unauthorized as refused:
        refused.headers.setdefault("WWW-Authenticate", 'Bearer error="invalid_token"')
        raise
    request.state.principal = found
    return found


async def mfa_principal(request: Request) -> Principal:
    """The caller, who must have signed in with a second factor (for privileged routes).

    Roles listed in auth.mfa_required_roles cannot reach such routes from a
    password-only session: they enrol TOTP first, then sign in again.
    """
    caller = await principal(request)
    if not caller.mfa:
        raise Forbidden("This action needs a session signed in with two factors.")
    return caller
