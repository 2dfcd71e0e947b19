"""Readiness under failure, CORS allowlists and proxy attribution."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from bastion.access import public
from bastion.app import create_app
from bastion.settings import Secret, Settings

SettingsFactory = Callable[..., Settings]


async def _client(app: FastAPI, **kwargs: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, **kwargs)  # type: ignore[arg-type]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="https://testserver") as client,
    ):
        yield client


async def test_readyz_is_503_when_the_database_is_down(make_settings: SettingsFactory) -> None:
    """V16.5.2: a dead dependency is reported, not hidden."""
    settings = make_settings()
    down = settings.model_copy(update={"database_url": Secret("postgresql+asyncpg://nobody@127.0.0.1:1/none")})
    async for client in _client(create_app(down)):
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert "127.0.0.1" not in response.text
        assert (await client.get("/healthz")).status_code == 200


async def test_readyz_checks_redis_when_configured(make_settings: SettingsFactory, redis_url: str) -> None:
    async for client in _client(create_app(make_settings(redis_url=redis_url))):
        assert (await client.get("/readyz")).status_code == 200
    async for client in _client(create_app(make_settings(redis_url="redis://127.0.0.1:1/0"))):
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert "Redis" in response.json()["detail"]


async def test_cors_allows_only_listed_origins(make_settings: SettingsFactory) -> None:
    """V3.4.2: the allowed origin comes from an allowlist, never reflected."""
    settings = make_settings(cors={"allow_origins": ["https://app.example"], "allow_credentials": True})
    async for client in _client(create_app(settings)):
        good = await client.get("/healthz", headers={"origin": "https://app.example"})
        assert good.headers["access-control-allow-origin"] == "https://app.example"
        assert good.headers["access-control-allow-credentials"] == "true"
        evil = await client.get("/healthz", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in evil.headers
        preflight = await client.options(
            "/healthz",
            headers={"origin": "https://evil.example", "access-control-request-method": "GET"},
        )
        assert preflight.status_code == 400
        assert "access-control-allow-origin" not in preflight.headers
        ok = await client.options(
            "/healthz",
            headers={"origin": "https://app.example", "access-control-request-method": "GET"},
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://app.example"


def _ip_app(settings: object) -> FastAPI:
    app = create_app(settings)  # type: ignore[arg-type]

    @app.get("/test/ip", dependencies=[Depends(public)])
    async def ip(request: Request) -> dict[str, str]:
        assert request.client is not None
        return {"ip": request.client.host, "scheme": request.url.scheme}

    return app


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),  # untrusted peer: header ignored
        ("10.0.0.5", "198.51.100.7", "198.51.100.7"),  # trusted proxy: its hop believed
        ("10.0.0.5", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # spoofed leftmost hop ignored
        ("10.0.0.5", "198.51.100.7, 10.0.0.9", "198.51.100.7"),  # chain of trusted proxies
        ("10.0.0.5", "not-an-ip", "10.0.0.5"),  # garbage: attribute to the proxy
        ("10.0.0.5", "2001:db8::1", "2001:db8::1"),
    ],
)
async def test_x_forwarded_for_only_from_trusted_proxies(
    make_settings: SettingsFactory, peer: str, forwarded: str, expected: str
) -> None:
    """V4.1.3: a client cannot override what our proxy sets."""
    settings = make_settings(server={"trusted_proxies": ["10.0.0.0/8"]})
    async for client in _client(_ip_app(settings), client=(peer, 5000)):
        response = await client.get("/test/ip", headers={"x-forwarded-for": forwarded})
        assert response.json()["ip"] == expected


async def test_forwarded_headers_ignored_without_trusted_proxies(settings: object) -> None:
    async for client in _client(_ip_app(settings), client=("10.0.0.5", 5000)):
        response = await client.get("/test/ip", headers={"x-forwarded-for": "1.2.3.4", "x-forwarded-proto": "http"})
        assert response.json() == {"ip": "10.0.0.5", "scheme": "https"}
