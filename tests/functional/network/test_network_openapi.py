"""One OpenAPI document per listener: the public one does not describe the
admin plane (V13.4.5: no more is exposed than the listener serves)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bastion.network.listener import AdminListener

ADMIN_ONLY_SCHEMAS = {"UserInfo", "UserPatch", "RoleInfo", "RoleBody", "CollectionChanges"}


@pytest.fixture
def database_url() -> None:
    return None  # documents only: SQLite suffices


@pytest.fixture
async def admin_client(app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """The same app as the admin listener serves it (the lifespan runs through ``client``)."""
    listener = AdminListener(app, client_cert_verified=True)
    transport = httpx.ASGITransport(app=listener, client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as admin:
        yield admin


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[1]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(value) for value in node))
    return set()


async def test_the_public_document_omits_the_admin_plane(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert document["paths"]
    assert [path for path in document["paths"] if path.startswith("/admin")] == []
    schemas = set(document["components"]["schemas"])
    assert not schemas & ADMIN_ONLY_SCHEMAS
    assert _refs(document) <= schemas  # nothing it uses was pruned
    assert "/api/v1/auth/login" in document["paths"]
    assert (await client.get("/admin/openapi.json")).status_code == 404


async def test_the_admin_listener_has_its_own_document(
    app: FastAPI, client: httpx.AsyncClient, admin_client: httpx.AsyncClient
) -> None:
    response = await admin_client.get("/admin/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["paths"]
    assert all(path.startswith("/admin/") for path in document["paths"])
    assert _refs(document) <= set(document["components"]["schemas"])
    assert (await admin_client.get("/openapi.json")).status_code == 404

    public = (await client.get("/openapi.json")).json()
    assert set(public["paths"]) | set(document["paths"]) == set(app.openapi()["paths"])
