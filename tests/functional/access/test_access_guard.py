"""The guard registry (bastion.access.guard): every route of every kind
declares who may call it, or the app does not start.

ASVS 5.0 V8.2.1 (function-level access only with explicit permissions) and
V8.1.1 (the rules are written down: ``requirement_of`` reads them back from
the routes themselves).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send
from typer.testing import CliRunner

from bastion.access import (
    Principal,
    UnguardedRoutes,
    authenticated,
    check_routes,
    guard,
    guard_app,
    public,
    require,
    requirement_of,
)
from bastion.access.guard import every_route, guarded_routes
from bastion.app import create_app
from bastion.cli import app as cli
from bastion.settings import Settings
from harness import Harness

ALICE = "alice@example.com"


async def plain(request: Request) -> Response:
    return PlainTextResponse("reached")


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("reached")(scope, receive, send)


async def start(app: FastAPI) -> None:
    async with app.router.lifespan_context(app):
        pass


async def test_v8_2_1_every_stock_route_declares_its_guard(settings: Settings) -> None:
    """V8.1.1, V8.2.1: the stock app starts, and every route it serves (the
    records Mount and /openapi.json included) names its requirement."""
    app = create_app(settings)
    await start(app)
    served = {found.path: requirement_of(found) for found in every_route(app)}
    assert served["/api/v1/collections/{name}/records"] == "by_rule"
    assert served["/api/v1/collections/{name}/records/{record_id}"] == "by_rule"
    assert served["/openapi.json"] == "public"
    assert served["/api/v1/auth/login"] == "public"
    assert served["/api/v1/me/password"] == "permission:me:password"
    assert served["/admin/api/v1/users"] == "mfa:admin:users:read"
    assert None not in served.values()


@pytest.mark.parametrize(
    ("add", "named"),
    [
        (lambda app: app.router.routes.append(Route("/plain", plain)), "GET,HEAD /plain"),
        (lambda app: app.mount("/metrics", asgi_app), "* /metrics/"),
        (lambda app: app.mount("/sub", Router(routes=[Route("/inner", plain)])), "GET,HEAD /sub/inner"),
        (lambda app: app.include_router(_unguarded_router()), "GET /api/v1/ext/open"),
        (lambda app: app.include_router(_frontend_router(), prefix="/ext"), "GET,HEAD /ext/site"),
    ],
    ids=["starlette-route", "mounted-app", "mounted-sub-app", "included-router", "frontend"],
)
async def test_v8_2_1_an_unguarded_route_of_any_kind_refuses_start_up(
    settings: Settings, add: object, named: str
) -> None:
    """V8.2.1: a plain Starlette route, a mounted ASGI app, a route inside a
    mounted sub-app and a route of an included APIRouter (the documented
    extension pattern) without a guard each stop the lifespan, in one line
    that names the route."""
    app = create_app(settings)
    add(app)  # type: ignore[operator]
    with pytest.raises(UnguardedRoutes) as refused:
        await start(app)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("refusing to start: routes without an access requirement")
    assert message.endswith(f": {named}")


def _frontend_router(*dependencies: Any) -> APIRouter:
    router = APIRouter(dependencies=list(dependencies))
    router.frontend("/site", directory=".", check_dir=False)
    return router


def _unguarded_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1/ext")

    @router.get("/open")
    async def open_route() -> dict[str, str]:
        return {}

    return router


async def test_v8_2_1_every_unguarded_route_is_named_at_once(settings: Settings) -> None:
    app = create_app(settings)
    app.router.routes.append(Route("/plain", plain))
    app.include_router(_unguarded_router())
    with pytest.raises(UnguardedRoutes, match=r": GET,HEAD /plain; GET /api/v1/ext/open$"):
        check_routes(app)


async def test_v8_2_1_guarded_routes_of_every_kind_start_and_are_enforced(harness: Harness) -> None:
    """V8.2.1: the same requirements guard Starlette endpoints, mounted apps
    and included routers (router-level dependency), and are enforced: no
    credential is a 401 that says so, a missing permission a 403."""
    app = harness.app

    @guard(require("reports:read"))
    async def export(request: Request) -> Response:
        caller: Principal = request.state.principal
        return JSONResponse({"user": str(caller.user_id)})

    app.router.routes.append(Route("/ext/export", export))
    app.router.routes.append(Route("/ext/hello", guard(public)(plain)))
    app.mount("/ext/metrics", guard_app(authenticated, asgi_app))
    app.mount("/ext/sub", Router(routes=[Route("/inner", guard(public)(plain))]))
    router = APIRouter(prefix="/ext/router")

    @router.get("/who")
    async def who(caller: Annotated[Principal, Depends(authenticated)]) -> dict[str, str]:
        return {"user": str(caller.user_id)}

    @router.get("/by-router")
    async def by_router() -> dict[str, str]:
        return {"ok": "yes"}

    app.include_router(router, dependencies=[Depends(authenticated)])
    app.include_router(_frontend_router(Depends(public)), prefix="/ext")
    check_routes(app)
    assert requirement_of(next(r for r in guarded_routes(app.router.routes) if r.path.endswith("by-router"))) == (
        "authenticated"
    )

    client = harness.client
    anonymous = await client.get("/ext/export")
    assert anonymous.status_code == 401
    assert anonymous.json()["detail"] == (
        "This route needs a credential: send Authorization: Bearer <access token or API key>."
    )
    assert (await client.get("/ext/metrics/anything")).status_code == 401
    assert (await client.get("/ext/router/by-router")).status_code == 401
    assert (await client.get("/ext/hello")).text == "reached"
    assert (await client.get("/ext/sub/inner")).text == "reached"

    await harness.register(ALICE)
    alice = harness.bearer(await harness.login(ALICE))
    assert (await client.get("/ext/export", headers=alice)).status_code == 403
    assert (await client.get("/ext/metrics/x", headers=alice)).text == "reached"
    assert (await client.get("/ext/router/by-router", headers=alice)).json() == {"ok": "yes"}
    assert (await client.get("/ext/router/who", headers=alice)).status_code == 200


async def test_a_bad_credential_still_says_it_is_bad(harness: Harness) -> None:
    """The no-credential 401 is its own text; a forged token keeps "invalid, expired or revoked"."""
    none = await harness.client.get("/api/v1/me")
    forged = await harness.client.get("/api/v1/me", headers={"authorization": "Bearer bsk_00_forged"})
    assert none.status_code == forged.status_code == 401
    assert none.json()["title"] == "Authentication Required"
    assert "invalid, expired or revoked" in forged.json()["detail"]


def test_v8_2_1_serve_app_with_an_unguarded_route_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """V8.2.1: ``bastion serve --app module:factory`` refuses an extension app
    with an unguarded route before any worker starts, in one line."""
    data = tmp_path / "data"
    runner = CliRunner()
    assert runner.invoke(cli, ["init", "--data-dir", str(data)]).exit_code == 0
    (tmp_path / "unguarded_extension.py").write_text(
        textwrap.dedent(
            """
            from fastapi import APIRouter
            import bastion

            router = APIRouter(prefix="/api/v1/ext")

            @router.get("/open")
            async def open_route() -> dict:
                return {}

            def app_factory():
                app = bastion.create_app(bastion.load_settings())
                app.include_router(router)
                return app
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["serve", "--data-dir", str(data), "--app", "unguarded_extension:app_factory"])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].endswith(
        "routes without an access requirement (declare public, authenticated, "
        "require(...), require_mfa(...) or by_rule): GET /api/v1/ext/open"
    )
    assert "Traceback" not in result.stderr


async def test_requirement_of_reads_an_unguarded_route_as_none() -> None:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(_unguarded_router())
    app.router.routes.append(Route("/plain", plain))
    assert [requirement_of(found) for found in guarded_routes(app.router.routes)] == [None, None]
