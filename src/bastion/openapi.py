"""The OpenAPI document, one per listener.

The public listener answers 404 for the admin plane, and its document must
not describe it either: ``/openapi.json`` lists every route but ``/admin/…``,
and only the schemas those routes use. The admin listener, which serves
nothing outside ``/admin``, has its own at ``/admin/openapi.json``.

Each document says what the routes really answer (schemathesis checks it from
outside, tests/security): every error is RFC 9457 problem details, a route
that is not public needs a bearer credential, and any operation may meet the
errors any request may meet (a body that is not JSON, a throttle, lockdown),
which the ``default`` response stands for.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from bastion.access import public
from bastion.access.guard import every_route
from bastion.http.problems import PROBLEM_JSON
from bastion.network.ipfilter import ADMIN_PREFIX

router = APIRouter(include_in_schema=False, dependencies=[Depends(public)])
_SCHEMAS = "#/components/schemas/"


@router.get("/openapi.json")
async def public_document(request: Request) -> JSONResponse:
    return JSONResponse(listener_document(request.app.openapi(), admin=False, public_routes=_public_routes(request)))


@router.get(ADMIN_PREFIX + "/openapi.json")
async def admin_document(request: Request) -> JSONResponse:
    return JSONResponse(listener_document(request.app.openapi(), admin=True, public_routes=_public_routes(request)))


def _public_routes(request: Request) -> frozenset[tuple[str, str]]:
    """(METHOD, path) of every route anyone may call, without a credential."""
    return frozenset(
        (method, route.path)
        for route in every_route(request.app)
        if route.guard is not None and route.guard.kind == "public"
        for method in route.methods
    )


def listener_document(
    document: dict[str, Any], *, admin: bool, public_routes: frozenset[tuple[str, str]] = frozenset()
) -> dict[str, Any]:
    """``document`` with only one listener's paths, the schemas they reach, and what
    every operation may answer besides what its route declares (``_conform``)."""
    paths = {
        path: {method: _conform(method, path, operation, public_routes) for method, operation in item.items()}
        for path, item in document["paths"].items()
        if _on_admin(path) == admin
    }
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    reached: set[str] = set()
    pending = _references(paths)
    while pending:
        name = pending.pop()
        if name not in reached and name in schemas:
            reached.add(name)
            pending |= _references(schemas[name])
    kept = {n: s for n, s in schemas.items() if n in reached}
    kept["Problem"] = _PROBLEM
    components = {**document.get("components", {}), "schemas": kept, "securitySchemes": _SCHEMES}
    return {**document, "paths": paths, "components": components}


_PROBLEM: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; some carry more members (errors, problems, …).",
    "type": "object",
    "required": ["type", "title", "status", "detail", "request_id"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "request_id": {"type": "string"},
    },
    "additionalProperties": True,
}
_AS_PROBLEM = {PROBLEM_JSON: {"schema": {"$ref": _SCHEMAS + "Problem"}}}
_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A session's access token, an API key (bsk_…) or an OAuth access token.",
    }
}
# Answered by the HTTP server before the application sees the request: no body.
_HEAD_TOO_LARGE = {"description": "The request head is too large (answered by the HTTP server, without a body)"}


def _conform(method: str, path: str, operation: Any, public_routes: frozenset[tuple[str, str]]) -> Any:
    if not isinstance(operation, dict) or "responses" not in operation:
        return operation  # a path item's "parameters" or "summary", not an operation
    responses: dict[str, Any] = {
        str(status): {**response, "content": _AS_PROBLEM} if str(status)[0] in "45" else response
        for status, response in operation["responses"].items()
    }
    # A route says so itself when whether it needs a credential depends on data
    # (a collection's rules); else it needs one unless its guard is public.
    security = operation.get("security")
    if security is None and (method.upper(), path) not in public_routes:
        security = [{"bearer": []}]
    if security:
        responses.setdefault("401", {"description": "Not authenticated", "content": _AS_PROBLEM})
        responses.setdefault("403", {"description": "Not allowed", "content": _AS_PROBLEM})
    responses.setdefault("431", _HEAD_TOO_LARGE)
    responses.setdefault("default", {"description": "Any other error", "content": _AS_PROBLEM})
    return {**operation, "responses": responses, **({"security": security} if security else {})}


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
