"""Bastion: a self-hosted, secure-by-default backend server.

The extension API: build the app, add your routes, and they inherit
authentication (access tokens and API keys), permissions (default deny),
rate limits, problem+json errors, security headers and audit::

    from typing import Annotated
    from fastapi import APIRouter, Depends
    import bastion

    router = APIRouter()

    @router.get("/api/v1/reports", dependencies=[Depends(bastion.rate_limit("60/minute", scope="reports"))])
    async def reports(caller: Annotated[bastion.Principal, Depends(bastion.require("reports:read"))]) -> dict:
        ...

    def app_factory():
        app = bastion.create_app(bastion.load_settings())
        app.include_router(router)
        return app

A route that declares no requirement (``public``, ``authenticated``,
``require(...)`` or ``by_rule``) stops the app at start-up, whatever its
kind: a plain Starlette route declares one with ``@bastion.guard(...)``, a
mounted app with ``bastion.guard_app(...)``. See docs/extending.md and
examples/.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Imported on first use, so `bastion --help` and `import bastion.cli` stay light.
_EXPORTS = {
    "create_app": "bastion.app",
    "load_settings": "bastion.settings",
    "Principal": "bastion.access",
    "Permission": "bastion.access",
    "public": "bastion.access",
    "authenticated": "bastion.access",
    "optional_principal": "bastion.access",
    "require": "bastion.access",
    "require_mfa": "bastion.access",
    "by_rule": "bastion.access",
    "guard": "bastion.access",
    "guard_app": "bastion.access",
    "rate_limit": "bastion.http.throttle",
    "unit_of_work": "bastion.uow",
    "record_event": "bastion.audit",
    "Outcome": "bastion.audit",
}
__all__ = [
    "Outcome",
    "Permission",
    "Principal",
    "__version__",
    "authenticated",
    "by_rule",
    "create_app",
    "guard",
    "guard_app",
    "load_settings",
    "optional_principal",
    "public",
    "rate_limit",
    "record_event",
    "require",
    "require_mfa",
    "unit_of_work",
]

if TYPE_CHECKING:
    from bastion.access import (
        Permission,
        Principal,
        authenticated,
        by_rule,
        guard,
        guard_app,
        optional_principal,
        public,
        require,
        require_mfa,
    )
    from bastion.app import create_app
    from bastion.audit import Outcome, record_event
    from bastion.http.throttle import rate_limit
    from bastion.settings import load_settings
    from bastion.uow import unit_of_work


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        module, _, attribute = _EXPORTS[name].partition(":")
        return getattr(importlib.import_module(module), attribute or name)
    raise AttributeError(f"module 'bastion' has no attribute {name!r}")
