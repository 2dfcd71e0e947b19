"""Access requirements for routes, as FastAPI dependencies.

Every route declares exactly what it needs, and the app refuses to start if
one does not (``check_routes``): a forgotten requirement must fail loudly at
start-up, not open a hole quietly at run time.

- ``public``: anyone (sign-in, health);
- ``authenticated``: any valid credential (a JWT with a live session, or an API key);
- ``require(permission)``: a credential whose roles or scopes grant it;
- ``require_mfa(permission)``: the same, from a session signed in with two factors;
- ``by_rule``: authorised inside the handler by data rules (collections).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute

from bastion.access.errors import InvalidCredential, MfaRequired, PermissionDenied
from bastion.access.principal import Principal
from bastion.audit import EventTag, Outcome, record_event
from bastion.http.deps import origin_of
from bastion.http.problems import TooManyRequests, Unauthorized
from bastion.uow import UnitOfWork

Requirement = Callable[[Request], Awaitable[Any]]
R = TypeVar("R", bound=Requirement)
_MARK = "__bastion_access__"


def _marked(kind: str) -> Callable[[R], R]:
    def mark(dependency: R) -> R:
        setattr(dependency, _MARK, kind)
        return dependency

    return mark


@_marked("public")
async def public(request: Request) -> None:
    """Open to anyone."""


@_marked("by_rule")
async def by_rule(request: Request) -> None:
    """Authorised by the handler's data rules; the handler must check them."""


async def optional_principal(request: Request) -> Principal | None:
    """The caller, or None without an Authorization header; 401 for a bad credential."""
    return await resolve_principal(request)


async def resolve_principal(request: Request, uow: UnitOfWork | None = None) -> Principal | None:
    """``optional_principal``; a handler that already has a unit of work passes
    it, and a bearer token's session is then checked on that unit's connection
    (one connection per request instead of two)."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(headers={"WWW-Authenticate": "Bearer"})
    state = request.app.state
    found: Principal
    try:
        if token.startswith("bsk_"):
            async with state.sessionmaker() as db:
                found = await state.access.authenticate_key(db, token)
        else:
            user_id, session_id = state.sessions.verify_access_token(token)
            if uow is not None:
                found = await state.access.for_access_token(await uow.db.connection(), user_id, session_id)
            else:
                async with state.engine.begin() as connection:
                    found = await state.access.for_access_token(connection, user_id, session_id)
    except Unauthorized as refused:
        refused.headers.setdefault("WWW-Authenticate", 'Bearer error="invalid_token"')
        raise
    if found.api_key_id is not None:
        # Each key has its own budget, so one leaked key cannot starve the rest.
        limit = state.settings.auth.api_key_rate
        verdict = await state.rate_limiter.hit(limit, "api-key", found.api_key_id)
        if not verdict.allowed:
            raise TooManyRequests(headers=verdict.headers())
    request.state.principal = found
    return found


@_marked("authenticated")
async def authenticated(request: Request) -> Principal:
    """Any valid credential (401 otherwise)."""
    found = await optional_principal(request)
    if found is None:
        raise InvalidCredential(headers={"WWW-Authenticate": "Bearer"})
    return found


def require(permission: str, *, mfa: bool = False) -> Requirement:
    """A dependency admitting only callers granted ``permission`` (403 and an audit event otherwise)."""

    @_marked(f"permission:{permission}")
    async def requirement(request: Request) -> Principal:
        caller = await authenticated(request)
        if caller.can(permission) and (caller.mfa or not mfa):
            return caller
        await _audit_denial(request, caller, permission)
        raise MfaRequired if caller.can(permission) else PermissionDenied

    return requirement


def require_mfa(permission: str) -> Requirement:
    return require(permission, mfa=True)


async def _audit_denial(request: Request, caller: Principal, permission: str) -> None:
    state = request.app.state
    async with state.sessionmaker() as db:
        record_event(
            db,
            state.clock,
            EventTag.ACCESS_DENIED,
            origin=origin_of(request),
            outcome=Outcome.DENIED,
            actor_id=caller.user_id,
            details={"permission": permission, "path": request.url.path},
        )
        await db.commit()


def requirement_of(route: APIRoute) -> str | None:
    """The access requirement a route declared, if any."""
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        kind = getattr(dependant.call, _MARK, None)
        if kind is not None:
            return str(kind)
        pending.extend(dependant.dependencies)
    return None


def check_routes(app: FastAPI) -> None:
    """Refuse to run an app with a route that declares no access requirement."""
    missing = [
        f"{','.join(sorted(route.methods or ()))} {route.path}"
        for route in app.routes
        if isinstance(route, APIRoute) and requirement_of(route) is None
    ]
    if missing:
        raise RuntimeError(
            "routes without an access requirement (add public, authenticated, require(...) or by_rule): "
            + "; ".join(missing)
        )
