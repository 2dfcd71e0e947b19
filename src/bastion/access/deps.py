"""Access requirements for routes, as FastAPI dependencies.

Every route declares exactly what it needs, and the app refuses to start if
one does not (``bastion.access.guard.check_routes``, which sees every route
kind): a forgotten requirement must fail loudly at start-up, not open a hole
quietly at run time. Each requirement here carries its ``Guard``; plain
Starlette endpoints and mounted apps use the same requirements through
``guard`` / ``guard_app``.

- ``public``: anyone (sign-in, health);
- ``authenticated``: any valid credential (a JWT with a live session, or an API key);
- ``require(permission)``: a credential whose roles or scopes grant it;
- ``require_mfa(permission)``: the same, from a session signed in with two factors;
- ``by_rule``: authorised inside the handler by data rules (collections).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from bastion.access.errors import InvalidCredential, MfaRequired, NoCredential, PermissionDenied
from bastion.access.guard import Guard, Requirement, declare
from bastion.access.principal import Principal
from bastion.audit import EventTag, Outcome, record_event
from bastion.db import transaction
from bastion.db.database import Queries
from bastion.http.problems import Unauthorized
from bastion.http.throttle import Throttle
from bastion.uow import UnitOfWork, origin_of

# The principal of a token another layer issues (OAuth access tokens), or
# None for a token it does not know; raising Unauthorized refuses it.
DelegatedTokens = Callable[[Request, Queries, str, str], Awaitable[Principal | None]]

# Each key has its own budget, so one leaked key cannot starve the rest.
API_KEY_BUDGET = Throttle("api-key", lambda s: s.auth.api_key_rate, key=None)


async def public(request: Request) -> None:
    """Open to anyone."""


async def by_rule(request: Request) -> None:
    """Authorised by the handler's data rules; the handler must check them."""


declare(public, Guard("public"))
declare(by_rule, Guard("by_rule"))


async def optional_principal(request: Request) -> Principal | None:
    """The caller, or None without an Authorization header; 401 for a bad credential."""
    return await resolve_principal(request)


async def resolve_principal(request: Request, uow: UnitOfWork | None = None) -> Principal | None:
    """``optional_principal``; a handler that already has a unit of work passes
    it, and a last-use time the lookup writes is then part of that transaction.

    Three credentials: an API key (``bsk_…``), Bastion's own access token (a
    session's), and an OAuth access token a client holds for the user or as
    itself, as ``Bearer`` or, bound to a key, as ``DPoP`` (RFC 9449 §7.1).
    The OAuth layer sits above this one, so it hands its check down as
    ``app.state.delegated_tokens`` (``DelegatedTokens``).
    """
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    scheme, token = scheme.lower(), token.strip()
    if scheme not in ("bearer", "dpop") or not token:
        raise Unauthorized(headers={"WWW-Authenticate": "Bearer"})
    state = request.app.state
    found: Principal | None = None
    try:
        db = uow.db if uow is not None else state.db
        if token.startswith("bsk_") and scheme == "bearer":
            found = await state.access.authenticate_key(db, token)
        else:
            delegated: DelegatedTokens | None = getattr(state, "delegated_tokens", None)
            if delegated is not None:
                found = await delegated(request, db, scheme, token)
            if found is None:
                if scheme != "bearer":
                    raise InvalidCredential
                user_id, session_id = state.sessions.verify_access_token(token)
                found = await state.access.for_access_token(db, user_id, session_id)
    except Unauthorized as refused:
        refused.headers.setdefault("WWW-Authenticate", 'Bearer error="invalid_token"')
        raise
    if found.api_key_id is not None:
        await API_KEY_BUDGET.hit(request, found.api_key_id)
    request.state.principal = found
    return found


async def authenticated(request: Request) -> Principal:
    """Any valid credential (401 otherwise)."""
    found = await optional_principal(request)
    if found is None:
        raise NoCredential(headers={"WWW-Authenticate": "Bearer"})
    return found


declare(authenticated, Guard("authenticated"))


def require(permission: str, *, mfa: bool = False) -> Requirement:
    """A dependency admitting only callers granted ``permission`` (403 and an audit event otherwise)."""

    async def requirement(request: Request) -> Principal:
        caller = await authenticated(request)
        if caller.can(permission) and (caller.mfa or not mfa):
            return caller
        await _audit_denial(request, caller, permission)
        raise MfaRequired if caller.can(permission) else PermissionDenied

    return declare(requirement, Guard("permission", permission, mfa=mfa))


def require_mfa(permission: str) -> Requirement:
    return require(permission, mfa=True)


async def _audit_denial(request: Request, caller: Principal, permission: str) -> None:
    state = request.app.state
    async with transaction(state.db) as tx:
        record_event(
            tx,
            state.clock,
            EventTag.ACCESS_DENIED,
            origin=origin_of(request),
            outcome=Outcome.DENIED,
            actor_id=caller.user_id,
            details={"permission": permission, "path": request.url.path},
        )
