"""``/verify-email`` and ``/reset-password``: the pages mail links open.

The token stays in the link's fragment (``#token=…``). A browser never sends
a fragment to a server, so the token appears in no access log, proxy log or
``Referer``: it reaches Bastion only in the body of the JSON call the page's
script makes (``POST /api/v1/auth/verify-email`` or ``…/password/reset``),
behind the same throttles as any other client of those routes. The pages
themselves are static for a given service name: they decide nothing and
learn nothing.

Jinja2 autoescapes every value, and the one script is a file served from
this origin (``/pages/assets/pages.js``), so the page policy needs neither
``'unsafe-inline'`` nor a nonce.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from bastion.access import public
from bastion.http.problems import NotFound

if TYPE_CHECKING:
    import jinja2

router = APIRouter(include_in_schema=False, dependencies=[Depends(public)])


@cache
def templates() -> jinja2.Environment:
    """Jinja2 and its templates, loaded when a page is first asked for (~11 MiB a worker need not hold)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("bastion.pages"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


ASSETS = "/pages/assets"
_ASSET_TYPES = {
    "pages.js": "text/javascript; charset=utf-8",
    "pages.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_assets = {name: files("bastion.pages").joinpath("assets", name).read_bytes() for name in _ASSET_TYPES}


def _page(request: Request, template: str, title: str) -> HTMLResponse:
    service = request.app.state.settings.auth.service_name
    html = templates().get_template(template).render(title=title, service=service, assets=ASSETS)
    return HTMLResponse(html)


@router.get("/verify-email")
async def verify_email(request: Request) -> HTMLResponse:
    """Confirms the address with the token from the link's fragment."""
    return _page(request, "verify_email.html", "Confirm your email address")


@router.get("/reset-password")
async def reset_password(request: Request) -> HTMLResponse:
    """Chooses a new password with the link's token; without one, asks for a reset link."""
    return _page(request, "reset_password.html", "Reset your password")


@router.get(ASSETS + "/{name}")
async def asset(name: str) -> Response:
    if name not in _assets:
        raise NotFound
    return Response(_assets[name], media_type=_ASSET_TYPES[name])
