"""The guard registry: who may call each route, declared once, checked at start-up.

Every route of the app, of whatever kind, declares a ``Guard``:

- a FastAPI route through a requirement dependency (``Depends(public)``,
  ``Depends(require("reports:read"))``, …), on the route or on the router
  that includes it;
- a plain Starlette route through ``@guard(requirement)`` on its endpoint;
- a mounted ASGI app through ``guard_app(requirement, app)`` (the whole
  mount answers to that one guard), or by guarding every route inside it.

``check_routes`` walks every route recursively (routes, included routers,
mounts, hosts and mounted apps) and refuses, in one line naming each route,
an app in which any route declares nothing: a forgotten requirement must fail
loudly at start-up, not open a hole quietly at run time (ASVS V8.2.1).
``every_route(app)`` yields them all (method, full path, guard), and
``guard_of`` / ``requirement_of`` answer for any route kind, so tests can be
generated from the routes themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from starlette.routing import BaseRoute, Host, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "Guard",
    "GuardedRoute",
    "UnguardedRoutes",
    "check_routes",
    "declare",
    "every_route",
    "guard",
    "guard_app",
    "guard_of",
    "guarded_routes",
    "requirement_of",
]

Kind = Literal["public", "authenticated", "permission", "by_rule"]
Requirement = Callable[[Request], Awaitable[Any]]
_MARK = "__bastion_guard__"


@dataclass(frozen=True)
class Guard:
    """Who may call a route.

    ``str(guard)`` is its requirement: ``public``, ``authenticated``,
    ``by_rule`` (the collection's own rules decide, inside the handler),
    ``permission:<name>``, or ``mfa:<name>`` (the permission, from a session
    signed in with two factors).
    """

    kind: Kind
    permission: str | None = None
    mfa: bool = False

    def __str__(self) -> str:
        if self.kind != "permission":
            return self.kind
        return f"{'mfa' if self.mfa else 'permission'}:{self.permission}"


F = TypeVar("F", bound=Callable[..., Any])


def declare(target: F, declared: Guard) -> F:
    """Record ``declared`` as the guard of a requirement, endpoint or app."""
    setattr(target, _MARK, declared)
    return target


def _declared(target: object) -> Guard | None:
    found = getattr(target, _MARK, None)
    return found if isinstance(found, Guard) else None


def _required(requirement: Requirement) -> Guard:
    declared = _declared(requirement)
    if declared is None:
        raise TypeError(f"{requirement!r} is not an access requirement (public, authenticated, require(...), by_rule)")
    return declared


def _needs_no_check(declared: Guard) -> bool:
    # public lets anyone in; by_rule is decided by the handler's data rules.
    return declared.kind in ("public", "by_rule")


Endpoint = Callable[[Request], Awaitable[Any]]


def guard(requirement: Requirement) -> Callable[[Endpoint], Endpoint]:
    """Guard a plain Starlette endpoint with an access requirement.

    The requirement runs before the endpoint (401/403 as on FastAPI routes;
    the caller is then ``request.state.principal``)::

        @bastion.guard(bastion.require("reports:read"))
        async def export(request: Request) -> Response: ...

        app.router.routes.append(Route("/api/v1/export", export))
    """
    declared = _required(requirement)

    check = not _needs_no_check(declared)

    def wrap(endpoint: Endpoint) -> Endpoint:
        # A new function, never a mark on ``endpoint`` itself: the same
        # function may serve another route under another guard.
        async def checked(request: Request) -> Any:
            if check:
                await requirement(request)
            return await endpoint(request)

        checked.__name__ = getattr(endpoint, "__name__", "endpoint")
        checked.__doc__ = endpoint.__doc__
        return declare(checked, declared)

    return wrap


def guard_app(requirement: Requirement, app: ASGIApp) -> ASGIApp:
    """Guard a mounted ASGI app as a whole: every HTTP request to it meets ``requirement``.

    A WebSocket is refused unless the app is public (a requirement reads an
    HTTP request; nothing here authenticates a WebSocket handshake).
    """
    declared = _required(requirement)

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _needs_no_check(declared):
            await requirement(Request(scope, receive))
        elif scope["type"] == "websocket" and declared.kind != "public":
            await send({"type": "websocket.close", "code": 1008})
            return
        await app(scope, receive, send)

    return declare(guarded, declared)


# --- the walk ---------------------------------------------------------------


@dataclass(frozen=True)
class GuardedRoute:
    """One route as served: its methods, full path, the route object and its guard (None: undeclared)."""

    methods: tuple[str, ...]
    path: str
    route: BaseRoute
    guard: Guard | None

    def line(self) -> str:
        return f"{','.join(self.methods)} {self.path}"


def _dependant_guard(dependant: Dependant | None) -> Guard | None:
    """The first requirement in a dependency tree (the route's own, or its router's)."""
    pending = list(dependant.dependencies) if dependant is not None else []
    while pending:
        current = pending.pop(0)
        found = _declared(current.call)
        if found is not None:
            return found
        pending.extend(current.dependencies)
    return None


def guard_of(route: Any) -> Guard | None:
    """The guard a route declared, for any route kind; None if it declared none.

    ``route`` is an ``APIRoute``, a Starlette ``Route``, ``WebSocketRoute`` or
    ``Mount``, or a route as ``guarded_routes`` yields it.
    """
    if isinstance(route, GuardedRoute):
        return route.guard
    if isinstance(route, (APIRoute, APIWebSocketRoute)):
        return _dependant_guard(route.dependant)
    if isinstance(route, (Route, WebSocketRoute)):
        return _declared(route.endpoint)
    if isinstance(route, Mount):
        return _declared(route.app)
    return None


def requirement_of(route: Any) -> str | None:
    """``str(guard_of(route))``: ``public``, ``authenticated``, ``by_rule``,
    ``permission:<name>``, ``mfa:<name>``; None for an undeclared route."""
    found = guard_of(route)
    return str(found) if found is not None else None


def guarded_routes(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[GuardedRoute]:
    """Every route reachable from ``routes`` with the full path it serves.

    Included routers are expanded as FastAPI serves them (their prefix and
    router-level dependencies applied); mounts and hosts are entered unless
    the mounted app is guarded as a whole; a mounted app that has no routes
    to enter and no guard of its own is one undeclared route.
    """
    for context in iter_route_contexts(list(routes)):
        route = context.original_route
        path = prefix + str(context.path or "")
        if isinstance(route, (Mount, Host)):
            whole = _declared(route.app)
            inner = getattr(route.app, "routes", None)
            if whole is None and inner:  # an app without routes of its own answers for itself
                yield from guarded_routes(inner, path if isinstance(route, Mount) else prefix)
                yield from _frontends(getattr(route.app, "router", route.app), path)
            else:
                where = path if isinstance(route, Mount) else f"{route.host}{prefix}"
                yield GuardedRoute(("*",), f"{where}/", route, whole)
        elif isinstance(route, (WebSocketRoute, APIWebSocketRoute)):
            yield GuardedRoute(("WEBSOCKET",), path, route, _guard_in(route, context))
        else:
            methods = tuple(sorted(context.methods or ("*",)))
            yield GuardedRoute(methods, path, route, _guard_in(route, context))


def _frontends(router: Any, prefix: str = "") -> Iterator[GuardedRoute]:
    """The static sites of ``router.frontend(...)``, guarded by their router's dependencies.

    FastAPI keeps them outside ``router.routes``, behind the private
    ``_iter_low_priority_routes`` (FastAPI 0.165). Should it be renamed, this
    finds none and ``test_v8_2_1_an_unguarded_route_of_any_kind_refuses_start_up``
    (its frontend case) fails, rather than frontends starting unchecked.
    """
    for candidate in getattr(router, "_iter_low_priority_routes", tuple)():
        group = getattr(candidate, "original_route", candidate)
        declared = _dependant_guard(getattr(candidate, "dependant", None))
        where = prefix + getattr(candidate, "frontend_prefix", "")
        for route in getattr(group, "routes", ()):
            yield GuardedRoute(("GET", "HEAD"), where + route.path, group, declared)


def _guard_in(route: BaseRoute, context: Any) -> Guard | None:
    """A route's guard as served: an included FastAPI route also answers to its router's dependencies."""
    if isinstance(route, (APIRoute, APIWebSocketRoute)):
        return _dependant_guard(context.dependant)
    return guard_of(route)


def every_route(app: Any) -> Iterator[GuardedRoute]:
    """Every route ``app`` serves: ``guarded_routes`` of its router, and its frontends."""
    yield from guarded_routes(app.router.routes)
    yield from _frontends(app.router)


class UnguardedRoutes(RuntimeError):
    """An app with a route that declares no access requirement."""


def check_routes(app: Any) -> None:
    """Refuse to run an app with a route that declares no access requirement (one line, every route named)."""
    missing = [found.line() for found in every_route(app) if found.guard is None]
    if missing:
        raise UnguardedRoutes(
            "refusing to start: routes without an access requirement "
            "(declare public, authenticated, require(...), require_mfa(...) or by_rule): " + "; ".join(missing)
        )
