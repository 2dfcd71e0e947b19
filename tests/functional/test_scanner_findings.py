"""What the security tier's scanners (tests/security) found, pinned in-process so that each
fix is proven on both databases in the quick suite too."""

from __future__ import annotations

from typing import Any

import httpx


async def test_v1_2_4_a_nul_in_an_oauth_parameter_is_an_invalid_request_not_a_server_error(
    client: httpx.AsyncClient,
) -> None:
    """V1.2.4 (wapiti, PostgreSQL): ``client_id=x%00`` reached the client lookup, and
    PostgreSQL refuses NUL in text: a 500. Now every OAuth parameter with a NUL is refused
    before any query, on both databases."""
    for path in ("/oauth2/authorize?response_type=code&client_id=x%00", "/oauth2/logout?client_id=x%00"):
        answer = await client.get(path)
        assert answer.status_code == 400, (path, answer.status_code, answer.text[:300])
    token = await client.post("/oauth2/token", data={"grant_type": "client_credentials", "client_id": "x\x00"})
    assert token.status_code == 400
    assert token.json()["error"] == "invalid_request"


async def test_v4_1_1_a_405_names_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    """V4.1.1 (schemathesis, allow_header_conformance): Starlette's own 405 named only the
    first route that matched the path (``Allow: POST`` for a path that also answers DELETE)."""
    totp = await client.put("/api/v1/me/mfa/totp")
    assert totp.status_code == 405
    assert totp.headers["allow"] == "DELETE, POST"
    keys = await client.options("/api/v1/me/api-keys")
    assert keys.status_code == 405
    assert keys.headers["allow"] == "GET, POST"


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, operation) for path, item in document["paths"].items() for method, operation in item.items()]


async def test_v8_2_1_the_document_says_which_operations_need_a_credential_and_how_errors_look(
    client: httpx.AsyncClient,
) -> None:
    """V8.2.1, V4.1.1 (schemathesis: ignored_auth, status and content-type conformance): every
    operation that is not public declares the bearer scheme and its 401, every error response
    is application/problem+json, and ``default`` stands for the errors any request may meet."""
    document = (await client.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    secured = {(method, path) for method, path, op in _operations(document) if op.get("security")}
    assert ("get", "/api/v1/me") in secured
    records = {(m, p) for m, p, _ in _operations(document) if p.startswith("/api/v1/collections/")}
    assert records <= secured  # no collection of the test settings has a public rule
    assert ("post", "/api/v1/auth/login") not in secured
    assert ("get", "/healthz") not in secured
    for method, path, operation in _operations(document):
        responses = operation["responses"]
        assert "default" in responses, (method, path)
        if operation.get("security"):
            assert "401" in responses, (method, path)
        for status, response in responses.items():
            if status[0] in "45" and status != "431":
                assert list(response["content"]) == ["application/problem+json"], (method, path, status)
