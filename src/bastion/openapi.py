"""The OpenAPI document, one per listener.

The public listener answers 404 for the admin plane, and its document must
not describe it either: ``/openapi.json`` lists every route but ``/admin/…``,
and only the schemas those routes use. The admin listener, which serves
nothing outside ``/admin``, has its own at ``/admin/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from bastion.access import public
from bastion.network.ipfilter import ADMIN_PREFIX

router = APIRouter(include_in_schema=False, dependencies=[Depends(public)])
_SCHEMAS = "#/components/schemas/"


@router.get("/openapi.json")
async def public_document(request: Request) -> JSONResponse:
    return JSONResponse(listener_document(request.app.openapi(), admin=False))


@router.get(ADMIN_PREFIX + "/openapi.json")
async def admin_document(request: Request) -> JSONResponse:
    return JSONResponse(listener_document(request.app.openapi(), admin=True))


def listener_document(document: dict[str, Any], *, admin: bool) -> dict[str, Any]:
    """``document`` with only one listener's paths, and the schemas they reach."""
    paths = {path: item for path, item in document["paths"].items() if _on_admin(path) == admin}
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    reached: set[str] = set()
    pending = _references(paths)
    while pending:
        name = pending.pop()
        if name not in reached and name in schemas:
            reached.add(name)
            pending |= _references(schemas[name])
    components = {**document.get("components", {}), "schemas": {n: s for n, s in schemas.items() if n in reached}}
    return {**document, "paths": paths, "components": components}


def _on_admin(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


def _references(node: Any) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith(_SCHEMAS):
                found.add(ref.removeprefix(_SCHEMAS))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found
