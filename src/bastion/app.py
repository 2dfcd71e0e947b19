"""``create_app(settings)``: wires routers, middleware and lifespan; no logic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from bastion import __version__, health, openapi
from bastion.access import check_routes
from bastion.access import routes as api_key_routes
from bastion.admin import alerts as admin_alerts
from bastion.admin import audit as admin_audit
from bastion.admin import blocks as admin_blocks
from bastion.admin import erasure as admin_erasure
from bastion.admin import export as admin_export
from bastion.admin import metrics as metrics_routes
from bastion.admin import routes as admin_routes
from bastion.clock import Clock, SystemClock
from bastion.data import routes as data_routes
from bastion.db import DatabaseUnavailable
from bastion.http import handlers
from bastion.http.middleware import ResponseObserver, SpineMiddleware
from bastion.identity import routes as identity_routes
from bastion.identity.gate import SignInGate
from bastion.identity.lockdown import may_take_password_step
from bastion.identity.throttle import LOGIN_BY_ACCOUNT
from bastion.incident.guard import LockdownGuard
from bastion.metrics import HttpObserver
from bastion.network.ipfilter import NetworkGuard
from bastion.network.listener import listener_of
from bastion.oauth import routes as oauth_routes
from bastion.pages import router as pages_router
from bastion.privacy import erasure_routes
from bastion.privacy import export_routes as privacy_export_routes
from bastion.runtime import build_services
from bastion.settings import Settings, reread_secret_files


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Routes added after create_app (the extension API) are checked too.
        check_routes(app)
        # Built again by each worker granian starts on SIGHUP: the ``*_FILE``
        # secrets are read again then (bastion.rotation.reload).
        services = build_services(reread_secret_files(settings), clock)
        # Routes read their services from app.state (request.app.state.identity, …).
        for name, value in vars(services).items():
            setattr(app.state, name, value)
        app.state.response_observers.append(HttpObserver(app.routes))
        if services.monitor is not None:
            # The monitor's HTTP signals (5xx, denied records, 401 on API keys).
            app.state.response_observers.append(services.monitor.observe)
        await services.start()
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
    app.include_router(admin_blocks.router)
    app.include_router(metrics_routes.router)
    app.include_router(admin_alerts.router)
    app.include_router(admin_audit.router)
    app.include_router(admin_export.router)
    app.include_router(privacy_export_routes.router)
    app.include_router(admin_erasure.router)
    app.include_router(erasure_routes.router)
    app.include_router(pages_router)
    app.include_router(openapi.router)
    oauth_routes.install(app)
    data_routes.install(app)

    # Innermost: refuses sign-in attempts at a spent account before routing,
    # with the login route's own path and per-account throttle.
    app.add_middleware(SignInGate, path=app.url_path_for("login"), throttle=LOGIN_BY_ACCOUNT)
    # Inside the network guard: it knows the listener, and blocked addresses never get this far.
    app.add_middleware(
        LockdownGuard,
        on_admin_plane=lambda scope: listener_of(scope) == "admin",
        password_paths=frozenset({app.url_path_for("login"), "/oauth2/sign-in"}),
        may_take_password_step=may_take_password_step,
    )
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
    # Metrics and the monitor's HTTP signals join this list in the lifespan.
    observers: list[ResponseObserver] = []
    app.state.response_observers = observers
    app.add_middleware(
        SpineMiddleware,
        **SpineMiddleware.options(settings),  # type: ignore[arg-type]
        observers=observers,
    )
    return app
