"""docs/api.md documents exactly the routes the app serves: every operation of
both listeners' OpenAPI documents, and every route kept out of them (pages,
the documents themselves). A route added or removed without the page fails here."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from bastion.network.listener import AdminListener
from bastion.settings import Settings

DOC = Path(__file__).parents[2] / "docs" / "api.md"
ROW = re.compile(r"^\| `(GET|POST|PUT|PATCH|DELETE)` \| `([^`]+)` \|", re.M)
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def database_url() -> None:
    return None  # documents only: SQLite suffices


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    notes = {"fields": {"title": {"type": "string"}}, "rules": {"read": "owner"}}
    return make_settings(collections={"notes": notes})


@pytest.fixture
async def admin_client(app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=AdminListener(app, client_cert_verified=True), client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as admin:
        yield admin


def _operations(document: dict[str, object], collections: set[str]) -> set[tuple[str, str]]:
    found = set()
    for path, item in document["paths"].items():  # type: ignore[attr-defined]
        # Each collection is documented with its own schema; the page describes the one route they share.
        shared = re.sub(rf"^/api/v1/collections/({'|'.join(collections)})/", "/api/v1/collections/{name}/", path)
        found |= {(method.upper(), shared) for method in item if method in METHODS}
    return found


async def test_api_doc_lists_every_route_and_only_those(
    app: FastAPI, client: httpx.AsyncClient, admin_client: httpx.AsyncClient
) -> None:
    collections = set(app.state.data.catalog.collections)
    served = _operations((await client.get("/openapi.json")).json(), collections)
    served |= _operations((await admin_client.get("/admin/openapi.json")).json(), collections)
    served |= {
        (method, route.path)
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute) and not route.include_in_schema
        for method in route.methods or ()
    }
    documented = set(ROW.findall(DOC.read_text()))
    assert not served - documented, f"served but not in docs/api.md: {sorted(served - documented)}"
    assert not documented - served, f"in docs/api.md but not served: {sorted(documented - served)}"
