"""``/api/v1/auth/*`` and ``/api/v1/me*``: thin handlers over the services.

Every handler that can be abused is rate limited per address before it does
any work, and sign-in is also limited per account before any hashing.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from bastion.access import Permission, Principal, authenticated, public, require
from bastion.access.service import AccessService
from bastion.db import Database, Transaction
from bastion.http.problems import NotFound, ValidationFailed
from bastion.identity import schemas
from bastion.identity.errors import LoginFailed
from bastion.identity.models import Account
from bastion.identity.service import IdentityService, SecondFactor
from bastion.identity.throttle import (
    FORGOT_BY_ACCOUNT,
    FORGOT_BY_ADDRESS,
    LOGIN_BY_ACCOUNT,
    LOGIN_BY_ADDRESS,
    MFA_BY_ADDRESS,
    REFRESH_BY_ADDRESS,
    REGISTER_BY_ACCOUNT,
    REGISTER_BY_ADDRESS,
    RESET_BY_ADDRESS,
    VERIFY_BY_ADDRESS,
    account_key,
    restore_sign_in,
    sign_in_address,
)
from bastion.sessions.service import SessionService, TokenPair
from bastion.uow import UnitOfWork, unit_of_work

router = APIRouter(prefix="/api/v1", tags=["identity"])
Caller = Annotated[Principal, Depends(authenticated)]
# The account routes: any signed-in owner; an API key only if a scope names the permission.
Reader = Annotated[Principal, Depends(require(Permission.ME_READ))]
SessionKeeper = Annotated[Principal, Depends(require(Permission.ME_SESSIONS))]
PasswordOwner = Annotated[Principal, Depends(require(Permission.ME_PASSWORD))]
MfaOwner = Annotated[Principal, Depends(require(Permission.ME_MFA))]

ACCEPTED = "If the address can be used, a message with the next step has been sent to it."
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not authenticated"},
    429: {"description": "Rate limited"},
}


def _identity(request: Request) -> IdentityService:
    service: IdentityService = request.app.state.identity
    return service


def _sessions(request: Request) -> SessionService:
    service: SessionService = request.app.state.sessions
    return service


def _tokens(pair: TokenPair) -> schemas.Tokens:
    return schemas.Tokens(access_token=pair.access_token, expires_in=pair.expires_in, refresh_token=pair.refresh_token)


@router.post(
    "/auth/register",
    status_code=202,
    dependencies=[Depends(public), Depends(REGISTER_BY_ADDRESS)],
    responses={403: {"description": "Registration closed"}, 422: {"description": "Invalid"}},
)
async def register(body: schemas.Credentials, request: Request) -> schemas.Accepted:
    await REGISTER_BY_ACCOUNT.hit(request, account_key(body.email))
    async with unit_of_work(request) as uow:
        await _identity(request).register(uow, body.email, body.password)
    return schemas.Accepted(detail=ACCEPTED)


@router.post(
    "/auth/verify-email",
    status_code=204,
    dependencies=[Depends(public), Depends(VERIFY_BY_ADDRESS)],
)
async def verify_email(body: schemas.TokenOnly, request: Request) -> Response:
    async with unit_of_work(request) as uow:
        await _identity(request).verify_email(uow, body.token)
    return Response(status_code=204)


@router.post(
    "/auth/login",
    responses={**AUTH_ERRORS, 403: {"description": "Email not verified, or a new password is required"}},
    dependencies=[Depends(public), Depends(LOGIN_BY_ADDRESS)],
)
async def login(body: schemas.Login, request: Request) -> schemas.Tokens | schemas.MfaChallenge:
    """Sign in. ``SignInGate`` applies this route's per-account throttle before routing too.

    The right password may answer an MFA challenge instead of tokens: TOTP
    when it is on, or (while a detection rule requires a step-up) a code
    mailed to the address, method ``email``."""
    email = sign_in_address(body.email)
    if email is None:  # matches no account: the same answer as a wrong password
        raise LoginFailed
    await LOGIN_BY_ACCOUNT.hit(request, account_key(email))
    identity = _identity(request)
    async with unit_of_work(request) as uow:
        user = await identity.authenticate(uow, email, body.password)
        if (challenge := await identity.second_step(uow, user)) is not None:
            return schemas.MfaChallenge(mfa_token=challenge.mfa_token, methods=list(challenge.methods))
        pair = await _sessions(request).open(uow, user.id, mfa=False, user_agent=uow.origin.user_agent or "")
    return _tokens(pair)


@router.post(
    "/auth/mfa",
    responses=AUTH_ERRORS,
    dependencies=[Depends(public), Depends(MFA_BY_ADDRESS)],
)
async def mfa(body: schemas.MfaLogin, request: Request) -> schemas.Tokens:
    async with unit_of_work(request) as uow:
        user = await _identity(request).complete_mfa(uow, body.mfa_token, SecondFactor(body.code, body.recovery_code))
        # A mailed step-up code is not a second factor the admin plane accepts: only TOTP makes an MFA session.
        pair = await _sessions(request).open(
            uow, user.id, mfa=user.totp_enabled, user_agent=uow.origin.user_agent or ""
        )
    return _tokens(pair)


@router.post(
    "/auth/refresh",
    responses=AUTH_ERRORS,
    dependencies=[Depends(public), Depends(REFRESH_BY_ADDRESS)],
)
async def refresh(body: schemas.RefreshBody, request: Request) -> schemas.Tokens:
    async with unit_of_work(request) as uow:
        pair = await _sessions(request).refresh(uow, body.refresh_token)
    return _tokens(pair)


@router.post("/auth/logout", status_code=204, responses=AUTH_ERRORS)
async def logout(caller: Caller, request: Request) -> Response:
    if caller.session_id is None:
        raise ValidationFailed("An API key has no session to sign out of; revoke the key instead.")
    async with unit_of_work(request) as uow:
        await _sessions(request).revoke(uow, caller.session_id, user_id=caller.user_id, reason="logout")
    return Response(status_code=204)


@router.post(
    "/auth/password/forgot",
    status_code=202,
    dependencies=[Depends(public), Depends(FORGOT_BY_ADDRESS)],
)
async def forgot_password(body: schemas.EmailOnly, request: Request) -> schemas.Accepted:
    # Per account too, so nobody can bomb a mailbox with reset mails.
    await FORGOT_BY_ACCOUNT.hit(request, account_key(body.email))
    async with unit_of_work(request) as uow:
        await _identity(request).forgot_password(uow, body.email)
    return schemas.Accepted(detail=ACCEPTED)


@router.post(
    "/auth/password/reset",
    status_code=204,
    dependencies=[Depends(public), Depends(RESET_BY_ADDRESS)],
)
async def reset_password(body: schemas.PasswordReset, request: Request) -> Response:
    async with unit_of_work(request) as uow:
        user = await _identity(request).reset_password(uow, body.token, body.new_password)
        await _end_credentials(request, uow, user.id, reason="password_reset")
    # The reset also unlocked the account: the owner signs in at once.
    await restore_sign_in(request.app.state.rate_limiter, request.app.state.settings, user.email)
    return Response(status_code=204)


async def _end_credentials(
    request: Request, uow: UnitOfWork, user_id: uuid.UUID, *, reason: str, keep: uuid.UUID | None = None
) -> None:
    """A new password ends what the old one could have opened: every session
    (but ``keep``, the owner's own) and every API key, since whoever knew the
    old password could have made one."""
    await _sessions(request).revoke_all(uow, user_id, reason=reason, keep=keep)
    access: AccessService = request.app.state.access
    await access.revoke_keys_of(uow, user_id, reason=reason)


async def _account(identity: IdentityService, db: Database | Transaction, caller: Principal) -> Account:
    """The caller's account; a disabled or vanished one is signed out (LoginFailed)."""
    user = await identity.by_id(db, caller.account_id)
    if user is None or user.disabled:
        raise LoginFailed
    return user


@router.get("/me", responses=AUTH_ERRORS)
async def me(caller: Reader, request: Request) -> schemas.Profile:
    identity, db = _identity(request), request.app.state.db
    user = await _account(identity, db, caller)
    roles = await identity.roles_of(db, user.id)
    return schemas.Profile(
        id=user.id,
        email=user.email,
        email_verified=user.email_verified_at is not None,
        roles=roles,
        mfa_enabled=user.totp_enabled,
        mfa_required=identity.mfa_required(roles),
        created_at=user.created_at,
    )


@router.post("/me/password", status_code=204, responses=AUTH_ERRORS, dependencies=[Depends(LOGIN_BY_ADDRESS)])
async def change_password(body: schemas.PasswordChange, caller: PasswordOwner, request: Request) -> Response:
    """The current password is a re-authentication: the sign-in throttles apply, and a wrong one counts
    towards the lockout (``IdentityService.reauthenticate``)."""
    async with unit_of_work(request) as uow:
        user = await _account(_identity(request), uow.db, caller)
        await LOGIN_BY_ACCOUNT.hit(request, account_key(user.email))
        await _identity(request).change_password(uow, user, body.current_password, body.new_password)
        await _end_credentials(request, uow, user.id, reason="password_change", keep=caller.session_id)
    return Response(status_code=204)


@router.post("/me/mfa/totp", responses=AUTH_ERRORS)
async def totp_enrol(caller: MfaOwner, request: Request) -> schemas.TotpEnrolment:
    async with unit_of_work(request) as uow:
        user = await _account(_identity(request), uow.db, caller)
        secret, uri = await _identity(request).totp_begin(uow, user)
    return schemas.TotpEnrolment(secret=secret, otpauth_uri=uri)


@router.post("/me/mfa/totp/confirm", responses=AUTH_ERRORS)
async def totp_confirm(body: schemas.CodeOnly, caller: MfaOwner, request: Request) -> schemas.RecoveryCodes:
    async with unit_of_work(request) as uow:
        user = await _account(_identity(request), uow.db, caller)
        codes = await _identity(request).totp_confirm(uow, user, body.code)
    return schemas.RecoveryCodes(recovery_codes=codes)


@router.delete("/me/mfa/totp", status_code=204, responses=AUTH_ERRORS, dependencies=[Depends(MFA_BY_ADDRESS)])
async def totp_disable(body: schemas.SecondFactorBody, caller: MfaOwner, request: Request) -> Response:
    """The code is a re-authentication, throttled and counted like the password on ``/me/password``."""
    async with unit_of_work(request) as uow:
        user = await _account(_identity(request), uow.db, caller)
        await LOGIN_BY_ACCOUNT.hit(request, account_key(user.email))
        await _identity(request).totp_disable(uow, user, SecondFactor(body.code, body.recovery_code))
    return Response(status_code=204)


@router.get("/me/sessions", responses=AUTH_ERRORS)
async def list_sessions(caller: Reader, request: Request) -> list[schemas.SessionInfo]:
    sessions = await _sessions(request).list(request.app.state.db, caller.account_id)
    return [
        schemas.SessionInfo(
            id=s.id,
            created_at=s.created_at,
            last_used_at=s.last_used_at,
            ip=s.ip,
            user_agent=s.user_agent,
            mfa=s.mfa,
            current=s.id == caller.session_id,
        )
        for s in sessions
    ]


@router.delete(
    "/me/sessions/{session_id}", status_code=204, responses={**AUTH_ERRORS, 404: {"description": "No such session"}}
)
async def revoke_session(session_id: uuid.UUID, caller: SessionKeeper, request: Request) -> Response:
    async with unit_of_work(request) as uow:
        if not await _sessions(request).revoke(uow, session_id, user_id=caller.user_id, reason="user"):
            raise NotFound
    return Response(status_code=204)
