"""The HTTP spine from outside: problem+json for every error, request ids,
security headers, body limits and JSON-only bodies (DESIGN.md §4)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel, ConfigDict, Field

from bastion.access import public
from bastion.app import create_app
from bastion.audit.models import AuditEvent
from bastion.http.problems import PROBLEM_JSON, Conflict
from bastion.network.listener import AdminListener
from bastion.settings import Secret, Settings

pytestmark = pytest.mark.usefixtures("_extra_routes")
SettingsFactory = Callable[..., Settings]

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


async def test_a_client_request_id_is_kept_apart_from_ours(
    client: httpx.AsyncClient, app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """V16.2.1: the request id in responses and audit events is always the server's own; a
    caller's X-Request-ID is logged beside it as client_request_id, never in its place."""
    chosen = "an-id-another-request-used"
    with caplog.at_level(logging.INFO, logger="bastion.access"):
        response = await client.post(
            "/api/v1/auth/login",
            json={"email": "nobody@example.com", "password": "wrong-password-123"},
            headers={"x-request-id": chosen},
        )
    assert response.status_code == 401
    ours = response.headers["x-request-id"]
    assert ours != chosen
    assert len(ours) == 32
    assert response.json()["request_id"] == ours
    audited = [row.request_id for row in await app.state.db.all(sa.select(AuditEvent.request_id))]
    assert audited
    assert chosen not in audited
    assert ours in audited
    (line,) = [record.msg for record in caplog.records if record.name == "bastion.access"]
    assert isinstance(line, dict)
    assert line["request_id"] == ours
    assert line["client_request_id"] == chosen


@pytest.mark.parametrize("offered", ["short", "bad id with spaces", "x" * 200, "inj\\r\\nSet-Cookie:a=b"])
async def test_a_malformed_client_request_id_is_not_logged(
    client: httpx.AsyncClient, offered: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bastion.access"):
        response = await client.get("/healthz", headers={"x-request-id": offered})
    assert response.headers["x-request-id"] != offered
    assert len(response.headers["x-request-id"]) == 32
    (line,) = [record.msg for record in caplog.records if record.name == "bastion.access"]
    assert isinstance(line, dict)
    assert "client_request_id" not in line


async def test_access_log_line(client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    """V16.2.1, V16.3.x: one line per request with method, path, status, duration and request id,
    and never the query string (it may carry a token)."""
    with caplog.at_level(logging.INFO, logger="bastion.access"):
        response = await client.get("/no/such/path?q=SENTINEL-QUERY-SECRET")
    (record,) = [record for record in caplog.records if record.name == "bastion.access"]
    line = record.msg
    assert isinstance(line, dict)
    assert line["method"] == "GET"
    assert line["path"] == "/no/such/path"
    assert line["status"] == 404
    assert isinstance(line["duration_ms"], float)
    assert line["request_id"] == response.headers["x-request-id"]
    assert "SENTINEL-QUERY-SECRET" not in str(line)


async def test_access_log_can_be_turned_off(make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(make_settings(log={"access": False}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as client,
    ):
        with caplog.at_level(logging.INFO, logger="bastion.access"):
            assert (await client.get("/healthz")).status_code == 200
    assert not [record for record in caplog.records if record.name == "bastion.access"]


async def test_head_is_answered_as_get_without_content(client: httpx.AsyncClient) -> None:
    """RFC 9110 §9.3.2: HEAD /healthz was a 405; now the GET answer's headers, no content."""
    response = await client.head("/healthz")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(b'{"status":"ok"}'))


async def test_a_body_that_stops_arriving_is_a_408(make_settings: SettingsFactory) -> None:
    """A body still incomplete at http.body_timeout is answered 408 (and the connection closed)."""
    app = create_app(make_settings(http={"body_timeout": 0.3}))

    async def stalled() -> AsyncIterator[bytes]:
        yield b'{"email": '
        await asyncio.sleep(5)
        yield b'"a@example.com"}'

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as client,
    ):
        response = await client.post(
            "/api/v1/auth/login", content=stalled(), headers={"content-type": "application/json"}
        )
    assert_problem(response, 408)
    assert response.headers["connection"] == "close"


async def test_a_trickling_body_is_cut_by_the_minimum_rate(make_settings: SettingsFactory) -> None:
    """Below http.body_min_rate (after the grace), a body is cut before body_timeout."""
    app = create_app(make_settings(http={"body_timeout": 60, "body_min_rate": 1_000_000}))
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def trickle() -> AsyncIterator[bytes]:
        while True:
            yield b" "
            await asyncio.sleep(0.25)

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as client,
    ):
        response = await client.post(
            "/api/v1/auth/login", content=trickle(), headers={"content-type": "application/json"}
        )
    assert_problem(response, 408)
    assert loop.time() - started < 30


@pytest.mark.parametrize("mode", ["prod-default", "configured"])
async def test_only_configured_hosts_are_answered(make_settings: SettingsFactory, mode: str) -> None:
    """The trailing-slash redirect is built from the Host header; a Host not ours is a 400."""
    if mode == "configured":
        settings = make_settings(http={"allowed_hosts": ["api.example.com"]})
    else:
        base = make_settings()
        # Only the mode and the public name matter to the spine (prod's other refusals are `bastion check`'s).
        settings = base.model_copy(
            update={
                "mode": "prod",
                "master_key": Secret(base.dev_master_key_file.read_text().strip()),
                "auth": base.auth.model_copy(update={"public_url": "https://api.example.com"}),
            }
        )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://api.example.com") as client,
    ):
        home = await client.get("/api/v1/collections")
        port = await client.get("/healthz", headers={"host": "API.example.com:8443"})
        foreign = await client.get("/api/v1/collections", headers={"host": "evil.example"})
    assert home.status_code == 307
    assert home.headers["location"].startswith("https://api.example.com/")
    assert port.status_code == 200
    body = assert_problem(foreign, 400)
    assert "evil" not in json.dumps(body)
    assert "location" not in foreign.headers


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
        assert headers["server"] == "bastion"  # never granian's, never a version


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


async def test_the_admin_listener_is_not_bound_to_the_public_names(make_settings: SettingsFactory) -> None:
    """The admin plane is reached by its own names (localhost through a tunnel); mTLS guards it."""
    app = create_app(make_settings(http={"allowed_hosts": ["api.example.com"]}))
    admin = AdminListener(app, client_cert_verified=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=admin, client=("127.0.0.1", 4242)), base_url="https://localhost:8444"
        ) as client,
    ):
        response = await client.get("/admin/api/v1/no-such-route")
    assert response.status_code != 400
