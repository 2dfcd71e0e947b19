"""The HTTP spine on a real `bastion serve` over TLS, over HTTP/1.1 and HTTP/2 alike.

In-process tests (tests/functional/test_spine.py) cannot see what the server
in front does: HTTP/2 framing (a HEAD answer with content, an answer before
the body was read), granian's own headers, a Host the client left out, a
connection that never finishes its body.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator

import httpx
import pytest
from serving import Served, serve

pytestmark = pytest.mark.e2e

PROBLEM_JSON = "application/problem+json"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "cache-control": "no-store",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
}
# Small on purpose: the flood test needs only a few connections to fill every slot.
MAX_CONNECTIONS = 8
BODY_TIMEOUT = 2.0

both_versions = pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(
        tmp_path_factory.mktemp("spine") / "data",
        BASTION_SERVER__MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        BASTION_HTTP__BODY_TIMEOUT=str(BODY_TIMEOUT),
        BASTION_HTTP__ALLOWED_HOSTS='["localhost"]',
    ) as served:
        yield served


def assert_spine(response: httpx.Response, http2: bool) -> None:
    assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    # V13.4.6: granian's `server: granian` is replaced; no software, no version.
    assert response.headers.get_list("server") == ["bastion"]
    assert len(response.headers["x-request-id"]) == 32


def assert_problem(response: httpx.Response, status: int, http2: bool) -> None:
    assert response.status_code == status
    assert_spine(response, http2)
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]


@both_versions
def test_security_headers_and_request_id(server: Served, http2: bool) -> None:
    """V3.4.1-V3.4.6, V13.4.6; a client's X-Request-ID never becomes the server's."""
    with server.client(http2=http2) as client:
        response = client.get("/healthz", headers={"x-request-id": "chosen-by-the-client"})
    assert response.status_code == 200
    assert_spine(response, http2)
    assert response.headers["x-request-id"] != "chosen-by-the-client"


@both_versions
def test_unknown_path_is_a_404_problem(server: Served, http2: bool) -> None:
    with server.client(http2=http2) as client:
        assert_problem(client.get("/no/such/path"), 404, http2)


@both_versions
def test_head_is_get_without_the_content(server: Served, http2: bool) -> None:
    """RFC 9110 §9.3.2: HEAD /healthz is the GET answer's headers (it was a 405, and an HTTP/2 protocol error)."""
    with server.client(http2=http2) as client:
        get = client.get("/healthz")
        head = client.head("/healthz")
        missing = client.head("/no/such/path")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert_spine(head, http2)
    assert missing.status_code == 404
    assert missing.content == b""
    assert_spine(missing, http2)


@both_versions
def test_oversized_body_is_a_413_problem(server: Served, http2: bool) -> None:
    """V4.1.x body limits: declared or not, a body over 1 MiB gets the 413 problem, not a reset stream."""
    big = b"[" + b"0," * (600 * 1024) + b"0]"

    def streamed() -> Iterator[bytes]:
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    with server.client(http2=http2) as client:
        declared = client.post("/api/v1/auth/login", content=big, headers={"content-type": "application/json"})
        undeclared = client.post("/api/v1/auth/login", content=streamed(), headers={"content-type": "application/json"})
        far_over = client.post(
            "/api/v1/auth/login", content=b" " * (5 * 1024 * 1024), headers={"content-type": "application/json"}
        )
    assert "content-length" not in undeclared.request.headers
    for response in (declared, undeclared, far_over):
        assert_problem(response, 413, http2)


@both_versions
def test_wrong_content_type_is_415_and_malformed_json_400(server: Served, http2: bool) -> None:
    with server.client(http2=http2) as client:
        wrong_type = client.post("/api/v1/auth/login", content=b"{}", headers={"content-type": "text/plain"})
        malformed = client.post(
            "/api/v1/auth/login", content=b'{"email": ', headers={"content-type": "application/json"}
        )
    assert_problem(wrong_type, 415, http2)
    assert_problem(malformed, 400, http2)


@both_versions
def test_a_foreign_host_is_refused_and_redirects_stay_home(server: Served, http2: bool) -> None:
    """V4.1.x: the trailing-slash redirect is never built from a Host the client chose."""
    with server.client(http2=http2) as client:
        foreign = client.get("/api/v1/collections", headers={"host": "evil.example"})
        home = client.get("/api/v1/collections")
    assert_problem(foreign, 400, http2)
    assert home.status_code == 307
    assert home.headers["location"].startswith(f"https://localhost:{server.port}/")


def _raw_http1(server: Served, head: bytes) -> bytes:
    context = server.tls()
    context.set_alpn_protocols(["http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(head)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = tls.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


@pytest.mark.parametrize(
    "host_lines", [b"", b"Host: localhost\r\nHost: evil.example\r\n"], ids=["missing", "duplicate"]
)
def test_http1_needs_exactly_one_host(server: Served, host_lines: bytes) -> None:
    """RFC 9112 §3.2: a request without a Host, or with two, is a 400 (with the security headers)."""
    answer = _raw_http1(server, b"GET /healthz HTTP/1.1\r\n" + host_lines + b"Connection: close\r\n\r\n")
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 400 Bad Request"
    assert b"content-security-policy: default-src 'none'" in rest.lower()


def test_slow_body_flood_does_not_stop_healthz(server: Served) -> None:
    """V15.x / slowloris on the body: three times as many connections as the listener has slots
    trickle a body a byte every half second. Each is cut after the body deadline (408), so a
    /healthz that queues behind them all is still answered; before the deadline the first
    slots stayed taken for as long as the tricklers liked, and /healthz was never answered."""
    flood = 3 * MAX_CONNECTIONS
    answered: list[float] = []
    cut: list[bytes] = []

    async def trickle(until: float) -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=server.tls(), server_hostname="localhost"
        )
        writer.write(
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        )
        try:
            while time.monotonic() < until and not reader.at_eof():
                writer.write(b" ")
                await writer.drain()
                try:
                    cut.append(await asyncio.wait_for(reader.readline(), 0.5))
                    return
                except TimeoutError:
                    continue
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            writer.close()

    async def healthz() -> None:
        async with httpx.AsyncClient(base_url=server.url, verify=server.tls(), timeout=25) as client:
            started = time.monotonic()
            response = await client.get("/healthz")
            assert response.status_code == 200
            answered.append(time.monotonic() - started)

    async def attack() -> None:
        until = time.monotonic() + 30
        tricklers = [asyncio.create_task(trickle(until)) for _ in range(flood)]
        await asyncio.sleep(1)  # every trickler connected (or queued) before the probe
        try:
            await healthz()
        finally:
            await asyncio.gather(*tricklers, return_exceptions=True)

    asyncio.run(attack())
    assert answered, "/healthz was not answered during the flood"
    assert cut
    assert all(line.startswith(b"HTTP/1.1 408") for line in cut)


def test_body_deadline_holds_over_http2(server: Served) -> None:
    """The deadline is per request, not per connection: an HTTP/2 stream that stops sending gets the 408."""

    async def stalled() -> httpx.Response:
        async def body() -> object:
            yield b"{"
            await asyncio.sleep(BODY_TIMEOUT * 3)
            yield b"}"

        async with httpx.AsyncClient(base_url=server.url, verify=server.tls(), http1=False, http2=True) as client:
            return await client.post("/api/v1/auth/login", content=body(), headers={"content-type": "application/json"})

    try:
        response = asyncio.run(stalled())
    except httpx.HTTPError as exc:  # the client may see the reset stream before the answer
        pytest.fail(f"no 408 answer: {exc!r}")
    assert_problem(response, 408, http2=True)
