"""IP policy, listener separation and transport posture through the real app (httpx ASGI).

ASVS 5.0: V4.1.3 (proxy headers from trusted proxies only), V13.4 (admin
plane separated), V12.1.3/V12.3.5 (admin plane needs client certificates in
prod), V13.1 (configuration reported by `bastion check`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import Depends, Request
from starlette.types import ASGIApp

from bastion.access.deps import public
from bastion.app import create_app
from bastion.network.ca import BastionCa
from bastion.network.listener import AdminIdentity, AdminListener
from bastion.posture.checks import check_settings
from bastion.settings import Settings

# The root conftest's factory type; `conftest` itself is ambiguous with several test dirs.
SettingsFactory = Callable[..., Settings]


@asynccontextmanager
async def _client(app: ASGIApp, fastapi_app: Any, client: tuple[str, int]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=client)
    async with (
        fastapi_app.router.lifespan_context(fastapi_app),
        httpx.AsyncClient(transport=transport, base_url="https://testserver") as http,
    ):
        yield http


async def _status(settings: Any, path: str, client: str, *, admin: bool = False, **headers: str) -> int:
    app = create_app(settings)
    outer: ASGIApp = AdminListener(app, client_cert_verified=True) if admin else app
    async with _client(outer, app, (client, 4242)) as http:
        return (await http.get(path, headers=headers)).status_code


async def test_public_listener_hides_the_admin_plane(make_settings: SettingsFactory) -> None:
    """V13.4: /admin and below are 404 on the public listener, exactly like an unknown path."""
    settings = make_settings()
    assert await _status(settings, "/admin", "127.0.0.1") == 404
    assert await _status(settings, "/admin/api/v1/users", "127.0.0.1") == 404
    assert await _status(settings, "/healthz", "127.0.0.1") == 200


async def test_admin_listener_serves_admin_paths_only_and_attributes_requests(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings()
    assert await _status(settings, "/healthz", "127.0.0.1", admin=True) == 404
    seen: list[AdminIdentity] = []
    app = create_app(settings)

    @app.get("/admin/probe", dependencies=[Depends(public)])
    async def probe(request: Request) -> dict[str, bool]:
        seen.append(request.state.admin_identity)
        return {"ok": True}

    caplog.set_level(logging.INFO)
    async with _client(AdminListener(app, client_cert_verified=True), app, ("127.0.0.1", 1)) as http:
        assert (await http.get("/admin/probe")).status_code == 200
    assert seen == [AdminIdentity(client_cert_verified=True, address="127.0.0.1")]
    logged = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "admin request"]
    assert logged
    assert logged[0]["client_cert"] == "verified"
    assert logged[0]["client_ip"] == "127.0.0.1"
    # The same route on the public listener does not exist.
    async with _client(app, app, ("127.0.0.1", 1)) as http:
        assert (await http.get("/admin/probe")).status_code == 404


async def test_admin_allowlist_is_loopback_by_default(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    assert await _status(settings, "/admin/x", "10.1.2.3", admin=True) == 403
    assert await _status(settings, "/admin/x", "::1", admin=True) == 404  # allowed, no such route yet


@pytest.mark.parametrize(
    ("policy", "client", "status"),
    [
        ({"deny": ["10.0.0.0/8"]}, "10.9.9.9", 403),
        ({"deny": ["10.0.0.0/8"]}, "11.0.0.1", 200),
        ({"allow": ["192.0.2.0/24"]}, "192.0.2.7", 200),
        ({"allow": ["192.0.2.0/24"]}, "198.51.100.1", 403),
        ({"allow": ["192.0.2.0/24"], "deny": ["192.0.2.7/32"]}, "192.0.2.7", 403),  # deny wins
        ({"deny": ["2001:db8::/32"]}, "2001:db8::5", 403),
        ({"deny": ["2001:db8::/32"]}, "2001:db9::5", 200),
        ({"deny": ["10.0.0.0/8"]}, "::ffff:10.0.0.1", 403),  # v4-mapped is the v4 address
    ],
)
async def test_listener_ip_policy(
    make_settings: SettingsFactory, policy: dict[str, list[str]], client: str, status: int
) -> None:
    """A denied client gets 403 (IPv4 and IPv6)."""
    assert await _status(make_settings(server=policy), "/healthz", client) == status


async def test_route_group_policy(make_settings: SettingsFactory) -> None:
    settings = make_settings(network={"route_groups": [{"prefix": "/readyz", "allow": ["127.0.0.1/32"]}]})
    assert await _status(settings, "/readyz", "10.0.0.1") == 403
    assert await _status(settings, "/healthz", "10.0.0.1") == 200
    assert await _status(settings, "/readyz", "127.0.0.1") == 200


async def test_forwarded_for_counts_only_from_trusted_proxies(make_settings: SettingsFactory) -> None:
    """V4.1.3: a spoofed X-Forwarded-For from an untrusted peer changes nothing."""
    settings = make_settings(server={"trusted_proxies": ["10.0.0.0/8"], "deny": ["203.0.113.0/24"]})
    xff = {"x-forwarded-for": "203.0.113.9"}
    assert await _status(settings, "/healthz", "10.0.0.2", **xff) == 403  # through our proxy
    assert await _status(settings, "/healthz", "198.51.100.1", **xff) == 200  # spoofed, ignored
    # Rightmost untrusted hop: a client-prepended address cannot hide the real one.
    spoof = {"x-forwarded-for": "192.0.2.1, 203.0.113.9"}
    assert await _status(settings, "/healthz", "10.0.0.2", **spoof) == 403
    escape = {"x-forwarded-for": "203.0.113.9, 192.0.2.1"}
    assert await _status(settings, "/healthz", "10.0.0.2", **escape) == 200  # 192.0.2.1 is the real client


async def test_denied_address_gets_no_cors_preflight(make_settings: SettingsFactory) -> None:
    settings = make_settings(server={"deny": ["10.0.0.0/8"]}, cors={"allow_origins": ["https://app.example"]})
    headers = {"origin": "https://app.example", "access-control-request-method": "GET"}
    app = create_app(settings)
    async with _client(app, app, ("10.0.0.1", 1)) as http:
        response = await http.options("/healthz", headers=headers)
        assert response.status_code == 403
        assert "access-control-allow-origin" not in response.headers
    async with _client(app, app, ("127.0.0.1", 1)) as http:
        response = await http.options("/healthz", headers=headers)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example"


async def test_too_many_header_fields_is_431(make_settings: SettingsFactory) -> None:
    settings = make_settings(server={"max_header_count": 16})
    headers = {f"x-h{i}": "1" for i in range(20)}
    response_status = await _status(settings, "/healthz", "127.0.0.1", **headers)
    assert response_status == 431


# -- posture -------------------------------------------------------------------------------------


def _cert_expiring_in(days: int, path: Any) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_check_warns_30_days_before_the_certificate_expires(make_settings: SettingsFactory, tmp_path: Any) -> None:
    soon, later = tmp_path / "soon.pem", tmp_path / "later.pem"
    _cert_expiring_in(10, soon)
    _cert_expiring_in(60, later)
    findings = check_settings(make_settings(server={"cert_file": str(soon)}))
    assert any(f.setting == "server.cert_file" and "expires in" in f.message for f in findings)
    findings = check_settings(make_settings(server={"cert_file": str(later)}))
    assert not any(f.setting == "server.cert_file" for f in findings)
    expired = tmp_path / "expired.pem"
    _cert_expiring_in(-1, expired)
    findings = check_settings(make_settings(server={"cert_file": str(expired)}))
    assert any(f.setting == "server.cert_file" and f.severity == "error" for f in findings)


def test_check_reports_the_transport_posture(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    summary = " | ".join(f.message for f in check_settings(settings) if f.setting == "transport")
    assert "TLS intermediate" in summary
    assert "admin :8444 NO client certificates" in summary  # dev, no CA yet: said out loud
    BastionCa.init(settings, now=dt.datetime.now(dt.UTC))
    summary = " | ".join(f.message for f in check_settings(settings) if f.setting == "transport")
    assert "admin :8444 mTLS" in summary


def test_prod_refuses_an_admin_listener_without_client_certificates(make_settings: SettingsFactory) -> None:
    """V12.3.5: prod never serves the admin plane without mTLS."""
    settings = make_settings()
    prod = settings.model_copy(
        update={"mode": "prod", "admin": settings.admin.model_copy(update={"require_client_cert": False})}
    )
    assert any(f.setting == "admin.require_client_cert" and f.severity == "error" for f in check_settings(prod))
    no_allowlist = settings.model_copy(
        update={"mode": "prod", "admin": settings.admin.model_copy(update={"allow": []})}
    )
    assert any(f.setting == "admin.allow" and f.severity == "error" for f in check_settings(no_allowlist))
