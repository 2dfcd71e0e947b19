"""``create_app(settings)``: wires routers, middleware and lifespan; no logic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from bastion import __version__, health, openapi
from bastion.access import check_routes
from bastion.access import routes as api_key_routes
from bastion.admin import routes as admin_routes
from bastion.clock import Clock, SystemClock
from bastion.data import routes as data_routes
from bastion.db import DatabaseUnavailable
from bastion.http import handlers
from bastion.http.middleware import SpineMiddleware
from bastion.identity import routes as identity_routes
from bastion.identity.gate import SignInGate
from bastion.identity.throttle import LOGIN_BY_ACCOUNT
from bastion.network.ipfilter import NetworkGuard
from bastion.oauth import routes as oauth_routes
from bastion.pages import router as pages_router
from bastion.runtime import build_services
from bastion.settings import Settings


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Routes added after create_app (the extension API) are checked too.
        check_routes(app)
        services = build_services(settings, clock)
        # Routes read their services from app.state (request.app.state.identity, …).
        for name, value in vars(services).items():
            setattr(app.state, name, value)
        await services.data.start()
        try:
            yield
        finally:
            await services.close()

    app = FastAPI(
        title="Bastion",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served per listener by bastion.openapi, guarded like every route
        debug=False,
    )
    handlers.install(app, unavailable=(DatabaseUnavailable,))
    app.include_router(health.router)
    app.include_router(identity_routes.router)
    app.include_router(api_key_routes.router)
    app.include_router(admin_routes.router)
    app.include_router(pages_router)
    app.include_router(openapi.router)
    oauth_routes.install(app)
    data_routes.install(app)

    # Innermost: refuses sign-in attempts at a spent account before routing,
    # with the login route's own path and per-account throttle.
    app.add_middleware(SignInGate, path=app.url_path_for("login"), throttle=LOGIN_BY_ACCOUNT)
    if settings.cors.allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors.allow_origins,
            allow_credentials=settings.cors.allow_credentials,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
            max_age=600,
        )
    # Inside the spine (which has resolved the real client address) and
    # outside CORS, so a denied address gets no preflight answer either.
    app.add_middleware(NetworkGuard, **NetworkGuard.options(settings))  # type: ignore[arg-type]
    app.add_middleware(SpineMiddleware, **SpineMiddleware.options(settings))  # type: ignore[arg-type]
    return app
