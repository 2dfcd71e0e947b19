"""Every OAuth 2.0 / OpenID Connect endpoint, gathered from the module of the spec that defines it."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from bastion.oauth import (
    consent,
    federation,
    oidc,
    resource,
    rfc7009,
    rfc7591,
    rfc7662,
    rfc8414,
    rfc8628,
    rfc9126,
    token,
)
from bastion.oauth.errors import OAuthError, oauth_error_response

__all__ = ["install"]

# Each spec module adds its router here (rfc8414.router, token.router, …).
ROUTERS: tuple[APIRouter, ...] = (
    rfc8414.router,
    rfc7591.router,
    token.router,
    oidc.router,
    rfc9126.router,
    rfc7009.router,
    rfc7662.router,
    rfc8628.router,
    federation.router,
    consent.router,
)


async def _on_oauth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OAuthError)  # noqa: S101 - registered for OAuthError only
    return oauth_error_response(exc)


def install(app: FastAPI) -> None:
    """Add the OAuth endpoints and their error handler to ``app``."""
    app.add_exception_handler(OAuthError, _on_oauth_error)
    # Bastion's API accepts OAuth access tokens through access's hook (access sits below oauth).
    app.state.delegated_tokens = resource.delegated_principal
    for router in ROUTERS:
        app.include_router(router)
