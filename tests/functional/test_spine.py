"""The HTTP spine from outside: problem+json for every error, request ids,
security headers, body limits and JSON-only bodies (DESIGN.md §4)."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel, ConfigDict, Field

from bastion.access import public
from bastion.http.problems import PROBLEM_JSON, Conflict

pytestmark = pytest.mark.usefixtures("_extra_routes")

router = APIRouter(dependencies=[Depends(public)])


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=20)
    count: int = Field(ge=0)


@router.post("/test/items", status_code=201)
async def create_item(item: Item) -> Item:
    return item


@router.get("/test/crash")
async def crash() -> None:
    msg = "boom at /srv/bastion/secret_module.py with SELECT * FROM users"
    raise RuntimeError(msg)


@router.get("/test/conflict")
async def conflict() -> None:
    raise Conflict


@pytest.fixture
def _extra_routes(app: FastAPI) -> None:
    # The extension API: routes added to a built app inherit the spine.
    app.include_router(router)


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert set(body) >= {"type", "title", "status", "detail", "request_id"}
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return dict(body)


async def test_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/no/such/<script>alert(1)</script>"), 404)
    assert "script" not in json.dumps(body)  # V16.5.1: no echoed input


async def test_wrong_method_is_a_405_problem_with_allow(client: httpx.AsyncClient) -> None:
    """V13.4.4: TRACE and other unsupported methods are refused."""
    response = await client.request("TRACE", "/healthz")
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET"
    assert_problem(await client.delete("/healthz"), 405)


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/test/items", content=b'{"name": "a", "count":', headers={"content-type": "application/json"}
    )
    body = assert_problem(response, 400)
    assert "count" not in json.dumps(body)


async def test_wrong_content_type_is_415(client: httpx.AsyncClient) -> None:
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
    ):
        response = await client.post("/test/items", content=b"name=a", headers={"content-type": content_type})
        assert_problem(response, 415)
    response = await client.post("/test/items", content=b'{"name":"a","count":1}')
    assert_problem(response, 415)  # no content type at all


async def test_json_subtypes_are_accepted(client: httpx.AsyncClient) -> None:
    for content_type in (
        "application/json",
        "application/json; charset=utf-8",
        "application/merge-patch+json",
    ):
        response = await client.post(
            "/test/items", content=b'{"name":"a","count":1}', headers={"content-type": content_type}
        )
        assert response.status_code == 201, content_type


async def test_oversized_body_is_413_by_declared_length(client: httpx.AsyncClient) -> None:
    response = await client.post("/test/items", json={"name": "a", "count": 1, "pad": "x" * (1024 * 1024)})
    assert_problem(response, 413)


async def test_oversized_body_is_413_when_streamed(client: httpx.AsyncClient) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"x" * 32768

    response = await client.post("/test/items", content=chunks(), headers={"content-type": "application/json"})
    assert_problem(response, 413)


async def test_deep_json_is_refused(client: httpx.AsyncClient) -> None:
    deep = "[" * 40 + "]" * 40
    response = await client.post("/test/items", content=deep, headers={"content-type": "application/json"})
    body = assert_problem(response, 400)
    assert "32" in str(body["detail"])
    very_deep = "[" * 100_000 + "]" * 100_000  # would blow the parser's recursion
    response = await client.post("/test/items", content=very_deep, headers={"content-type": "application/json"})
    assert_problem(response, 400)


async def test_wide_but_shallow_json_passes_the_depth_check(client: httpx.AsyncClient) -> None:
    response = await client.post("/test/items", json={"name": "a", "count": 1, "x": [[1], [2]] * 50})
    # Past the depth check, the strict model refuses the unknown field.
    assert_problem(response, 422)


async def test_validation_errors_point_at_fields_without_values(client: httpx.AsyncClient) -> None:
    response = await client.post("/test/items", json={"name": "n" * 21 + "SENTINEL", "count": -5, "admin": True})
    body = assert_problem(response, 422)
    pointers = sorted(error["pointer"] for error in body["errors"])  # type: ignore[attr-defined]
    assert pointers == ["/admin", "/count", "/name"]
    assert "SENTINEL" not in response.text


async def test_unhandled_error_is_generic_and_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """V16.5.1, V16.5.4: a last-resort handler answers generically; the log keeps the detail."""
    with caplog.at_level(logging.ERROR):
        response = await client.get("/test/crash")
    body = assert_problem(response, 500)
    for leak in ("boom", "/srv", "SELECT", "Traceback", "RuntimeError"):
        assert leak not in response.text
    assert body["request_id"] in caplog.text
    assert "boom" in caplog.text


async def test_raised_problems_keep_their_status(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/test/conflict"), 409)


async def test_request_id_is_echoed_when_well_formed(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"x-request-id": "abc-123-DEF.456"})
    assert response.headers["x-request-id"] == "abc-123-DEF.456"


@pytest.mark.parametrize("offered", ["short", "bad id with spaces", "x" * 200, "inj\\r\\nSet-Cookie:a=b"])
async def test_request_id_is_replaced_when_malformed(client: httpx.AsyncClient, offered: str) -> None:
    response = await client.get("/healthz", headers={"x-request-id": offered})
    assert response.headers["x-request-id"] != offered
    assert len(response.headers["x-request-id"]) == 32


async def test_security_headers_on_success_and_error(client: httpx.AsyncClient) -> None:
    """V3.4.1, V3.4.3, V3.4.4, V3.4.5, V3.4.6, V14.3.2, V13.4.6."""
    for response in (
        await client.get("/healthz"),
        await client.get("/missing"),
        await client.get("/test/crash"),
    ):
        headers = response.headers
        assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cross-origin-opener-policy"] == "same-origin"
        assert headers["cross-origin-resource-policy"] == "same-origin"
        assert headers["cache-control"] == "no-store"
        assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
        assert "server" not in headers


async def test_no_hsts_over_plain_http(app: FastAPI) -> None:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        response = await client.get("/healthz")
    assert "strict-transport-security" not in response.headers


async def test_health_ready_and_openapi(client: httpx.AsyncClient) -> None:
    """V13.4.5: interactive docs are not exposed; the OpenAPI document is."""
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    spec = (await client.get("/openapi.json")).json()
    assert "/healthz" in spec["paths"]
    assert (await client.get("/docs")).status_code == 404
    assert (await client.get("/redoc")).status_code == 404
