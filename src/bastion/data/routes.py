"""``/api/v1/collections/{name}/records``: thin handlers over the data service.

Collections can be defined while the server runs (admin API), so one set of
routes serves them all and validates with each collection's own models. The
OpenAPI document still shows every collection with its real schema: it is
generated from per-collection routes that exist only for documentation.
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Query, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from bastion.access import Principal, by_rule, guard
from bastion.access.deps import resolve_principal
from bastion.data.schema import Catalog, Collection
from bastion.data.service import DataService
from bastion.http.problems import ValidationFailed
from bastion.uow import UnitOfWork, unit_of_work

PREFIX = "/api/v1/collections"
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not authenticated"},
    403: {"description": "Not allowed in this collection"},
    404: {"description": "No such collection or record (also: one the caller may not see)"},
    422: {"description": "Invalid body or query"},
}


def _data(request: Request) -> DataService:
    service: DataService = request.app.state.data
    return service


def _record_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["record_id"])
    except ValueError:
        raise ValidationFailed(
            extra={"errors": [{"parameter": "record_id", "in": "path", "detail": "Input should be a valid UUID"}]}
        ) from None


def _json(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``content`` as a JSON response, encoded by orjson."""
    try:
        body = orjson.dumps(content)
    except orjson.JSONEncodeError:
        # orjson refuses integers beyond 64 bits, which a json field may hold: the standard library encodes them.
        body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


async def _list(request: Request, uow: UnitOfWork, name: str, caller: Principal | None) -> Response:
    page = await _data(request).list(uow, name, caller, request.query_params.multi_items())
    return _json({"items": page.items, "next_cursor": page.next_cursor})


async def _create(request: Request, uow: UnitOfWork, name: str, caller: Principal | None) -> Response:
    record = await _data(request).create(uow, name, caller, await request.body())
    return _json(record, status_code=201, headers={"Location": f"{PREFIX}/{name}/records/{record['id']}"})


async def _read(request: Request, uow: UnitOfWork, name: str, caller: Principal | None) -> Response:
    return _json(await _data(request).read(uow, name, caller, _record_id(request)))


async def _update(request: Request, uow: UnitOfWork, name: str, caller: Principal | None) -> Response:
    record = await _data(request).update(uow, name, caller, _record_id(request), await request.body())
    return _json(record)


async def _delete(request: Request, uow: UnitOfWork, name: str, caller: Principal | None) -> Response:
    await _data(request).delete(uow, name, caller, _record_id(request))
    return Response(status_code=204)


Operation = Callable[[Request, UnitOfWork, str, Principal | None], Awaitable[Response]]
# Every method a route admits, named: Starlette also routes HEAD to a GET
# route, and HEAD must read like GET, never fall through to a change.
_COLLECTION: dict[str, Operation] = {"GET": _list, "HEAD": _list, "POST": _create}
_RECORD: dict[str, Operation] = {"GET": _read, "HEAD": _read, "PATCH": _update, "DELETE": _delete}


def _dispatch(operations: dict[str, Operation]) -> Callable[[Request], Awaitable[Response]]:
    @guard(by_rule)  # each collection's rules decide, in DataService._admit
    async def endpoint(request: Request) -> Response:
        operation = operations[request.method]
        if "record_id" in request.path_params:
            _record_id(request)  # a malformed id is a 422 before anything else
        async with unit_of_work(request) as uow:
            caller = await resolve_principal(request, uow)
            return await operation(request, uow, request.path_params["name"], caller)

    return endpoint


# Plain Starlette routes, mounted ahead of every other route: these are the
# busiest requests, and FastAPI's routing and dependency solving cost more
# than the rest of a record read. Access is decided inside, by the
# collection's rules (``resolve_principal``, then ``DataService._admit``).
records = Mount(
    PREFIX,
    routes=[
        Route("/{name}/records", _dispatch(_COLLECTION), methods=["GET", "POST"]),
        Route("/{name}/records/{record_id}", _dispatch(_RECORD), methods=["GET", "PATCH", "DELETE"]),
    ],
)


# --- the OpenAPI document ----------------------------------------------------


def install(app: FastAPI) -> None:
    """Serve the records routes, and document every collection in the app's
    OpenAPI document (served per listener by ``bastion.openapi``)."""
    app.router.routes.insert(0, records)
    cache: dict[int, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        service: DataService | None = getattr(app.state, "data", None)
        catalog = service.catalog if service is not None else Catalog({})
        if catalog.version not in cache:
            cache.clear()
            cache[catalog.version] = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                routes=[*app.routes, *_documentation(catalog)],
            )
        return cache[catalog.version]

    app.openapi = openapi  # type: ignore[method-assign]


def _documentation(catalog: Catalog) -> list[APIRoute]:
    routes: list[APIRoute] = []
    for collection in catalog.collections.values():
        routes.extend(_collection_routes(collection))
    return routes


def _collection_routes(collection: Collection) -> list[APIRoute]:
    """Routes that are never served, only described: their signatures carry the collection's models."""
    base = f"{PREFIX}/{collection.name}/records"
    record_id = inspect.Parameter("record_id", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=uuid.UUID)
    query = inspect.Parameter(
        "query", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[collection.query_model, Query()]
    )

    def body(model: type[Any]) -> inspect.Parameter:
        return inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=model)

    tag: list[str | Enum] = [f"collection: {collection.name}"]
    specs: list[tuple[str, str, list[inspect.Parameter], Any, int, str]] = [
        (base, "GET", [query], collection.page_model, 200, "list"),
        (base, "POST", [body(collection.create_model)], collection.record_model, 201, "create"),
        (f"{base}/{{record_id}}", "GET", [record_id], collection.record_model, 200, "read"),
        (
            f"{base}/{{record_id}}",
            "PATCH",
            [record_id, body(collection.update_model)],
            collection.record_model,
            200,
            "update",
        ),
        (f"{base}/{{record_id}}", "DELETE", [record_id], None, 204, "delete"),
    ]
    return [
        APIRoute(
            path,
            _described(parameters),
            methods=[method],
            response_model=model,
            status_code=status,
            responses=ERRORS,
            tags=tag,
            name=f"{method.lower()}_{collection.name}{'_one' if '{record_id}' in path else ''}",
            summary=f"{method} {collection.name}",
            # The collection's rules decide: a public operation takes a credential but needs none.
            openapi_extra={
                "security": [{"bearer": []}, {}] if "public" in collection.rules.get(op, ()) else [{"bearer": []}]
            },
        )
        for path, method, parameters, model, status, op in specs
    ]


def _described(parameters: list[inspect.Parameter]) -> Callable[..., Any]:
    async def endpoint(**_: Any) -> None:  # pragma: no cover - documentation only
        raise NotImplementedError

    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return endpoint
