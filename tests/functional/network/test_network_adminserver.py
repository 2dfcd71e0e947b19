"""The admin listener's TLS context and request attribution, in process.

Handshakes run through memory BIOs against the same context the server uses;
the e2e suite repeats the important ones over real sockets.

ASVS 5.0: V12.1.1/V12.1.2 (TLS 1.2+, ECDHE AEAD suites), V12.1.3 (a client
certificate is verified before its identity is used), V12.1.4 (revocation),
V16.2.1/V16.3.1 (the certificate named in the log line and the audit event).
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, Request
from sqlalchemy import select

from bastion.access.deps import public
from bastion.app import create_app
from bastion.audit import EventTag, Origin, record_event
from bastion.audit.models import AuditEvent
from bastion.clock import FrozenClock
from bastion.db import open_database, transaction
from bastion.instance import initialise
from bastion.network.adminserver import ReloadingContext
from bastion.network.ca import BastionCa, CaPaths
from bastion.network.listener import AdminIdentity, AdminListener, PeerCertificate
from bastion.network.tls import PROFILES, server_context
from bastion.security.x509 import certificate_facts_der
from bastion.settings import Settings, load_settings
from bastion.uow import origin_of
from harness import over_mtls

NOW = dt.datetime.now(dt.UTC)


# -- handshakes through memory BIOs ---------------------------------------------------------


def _handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> ssl.SSLObject:
    """The server side of a finished handshake; ssl.SSLError when either side refuses."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(client_in, client_out, server_hostname="localhost")
    server = server_context.wrap_bio(to_server, to_client, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, obj in (("client", client), ("server", server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
            to_server.write(client_out.read())
            client_in.write(to_client.read())
        if all(done.values()):
            return server
    raise AssertionError("the handshake did not finish")


class Admin:
    """Bastion's CA with two issued certificates, and the admin listener's context over them."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.settings = settings
        self.tmp = tmp
        self.ca = BastionCa.init(settings, now=NOW)
        self.paths = CaPaths.of(settings)
        self.serials = {name: self.issue(name) for name in ("alice", "bob")}
        self.context = self.reloading()

    def issue(self, name: str) -> int:
        bundle = self.ca.issue(name, days=30, now=NOW)
        (self.tmp / f"{name}.pem").write_bytes(bundle.certificate_pem)
        (self.tmp / f"{name}.key").write_bytes(bundle.key_pem)
        return bundle.serial

    def reloading(self, profile: str = "intermediate") -> ReloadingContext:
        cert, key = self.settings.cert_file, self.settings.key_file
        ca, crl = self.paths.certificate, self.paths.crl

        def build() -> ssl.SSLContext:
            return server_context(PROFILES[profile], cert, key, client_ca=ca, crl=crl)

        return ReloadingContext(build, [cert, key, ca, crl], crl)

    def client(self, name: str | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.settings.data_dir / "tls" / "ca.pem"))
        if name:
            context.load_cert_chain(str(self.tmp / f"{name}.pem"), str(self.tmp / f"{name}.key"))
        return context


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """SQLite only: nothing here depends on the database backend."""
    settings = load_settings(tmp_path / "data")
    initialise(settings)
    return settings


@pytest.fixture
def admin(settings: Settings, tmp_path: Path) -> Admin:
    return Admin(settings, tmp_path)


def test_only_a_bastion_certificate_gets_through_and_it_names_its_owner(admin: Admin) -> None:
    """V12.1.3: the verified leaf is what the server reads the CN and serial from."""
    server = _handshake(admin.context, admin.client("alice"))
    der = server.getpeercert(binary_form=True)
    assert der is not None
    facts = certificate_facts_der(der)
    assert (facts.common_name, facts.serial, facts.subject) == ("alice", admin.serials["alice"], "CN=alice")
    with pytest.raises(ssl.SSLError):
        _handshake(admin.context, admin.client(None))
    # The server's own certificate (another CA, serverAuth) is not a client certificate.
    foreign = admin.client(None)
    foreign.load_cert_chain(str(admin.settings.cert_file), str(admin.settings.key_file))
    with pytest.raises(ssl.SSLError):
        _handshake(admin.context, foreign)


def test_a_revoked_certificate_is_refused_at_the_next_handshake(admin: Admin) -> None:
    """V12.1.4: the CRL file changed, so the next connection gets a context built with it."""
    before = admin.context.refresh()
    _handshake(admin.context, admin.client("bob"))
    admin.ca.revoke("bob", now=NOW)
    with pytest.raises(ssl.SSLError):
        _handshake(admin.context, admin.client("bob"))
    assert admin.context.refresh() is not before
    assert admin.context.is_revoked(admin.serials["bob"])
    assert not admin.context.is_revoked(admin.serials["alice"])
    _handshake(admin.context, admin.client("alice"))


def test_a_crl_that_does_not_load_refuses_everyone_until_it_does(
    admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    """Fail closed: the old context may trust a certificate the new CRL revokes."""
    admin.paths.crl.write_bytes(b"-----BEGIN X509 CRL-----\nnot a crl\n-----END X509 CRL-----\n")
    caplog.set_level(logging.ERROR)
    with pytest.raises(ssl.SSLError):
        _handshake(admin.context, admin.client("alice"))
    assert any("cannot load its TLS files" in str(r.msg) for r in caplog.records)
    admin.ca.refresh_crl(now=NOW)
    _handshake(admin.context, admin.client("alice"))


def test_sighup_rebuilds_the_context_without_a_file_change(admin: Admin) -> None:
    first = admin.context.refresh()
    assert admin.context.refresh() is first
    admin.context.reload()
    assert admin.context.refresh() is not first


@pytest.mark.parametrize(
    ("profile", "version", "ciphers", "accepted"),
    [
        ("intermediate", ssl.TLSVersion.TLSv1_3, None, True),
        ("intermediate", ssl.TLSVersion.TLSv1_2, None, True),
        ("intermediate", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-CHACHA20-POLY1305", True),
        ("intermediate", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384", False),  # CBC
        ("intermediate", ssl.TLSVersion.TLSv1_2, "AES128-GCM-SHA256", False),  # no forward secrecy
        ("modern", ssl.TLSVersion.TLSv1_3, None, True),
        ("modern", ssl.TLSVersion.TLSv1_2, None, False),
    ],
)
def test_admin_context_follows_the_tls_profile(
    admin: Admin, profile: str, version: ssl.TLSVersion, ciphers: str | None, accepted: bool
) -> None:
    """V12.1.1, V12.1.2: TLS 1.2+ (modern: 1.3 only), ECDHE with AEAD suites only."""
    client = admin.client("alice")
    client.maximum_version = version
    if ciphers:
        client.set_ciphers(ciphers)
    context = admin.reloading(profile)
    if accepted:
        _handshake(context, client)
    else:
        with pytest.raises(ssl.SSLError):
            _handshake(context, client)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_11_is_refused(admin: Admin) -> None:
    client = admin.client("alice")
    client.set_ciphers("DEFAULT:@SECLEVEL=0")  # the client would offer it; the server must not take it
    client.minimum_version = client.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        _handshake(admin.context, client)


def test_the_reloading_context_itself_has_no_certificate(admin: Admin) -> None:
    """Anything that used the dispatcher's own OpenSSL context would fail, not serve without checks."""
    with pytest.raises(ssl.SSLError):
        _handshake(super(ReloadingContext, admin.context), admin.client("alice"))  # type: ignore[arg-type]


# -- attribution on the admin listener ------------------------------------------------------


async def _probe(settings: Settings, certificate: PeerCertificate) -> tuple[int, list[tuple[AdminIdentity, Origin]]]:
    app = create_app(settings)
    seen: list[tuple[AdminIdentity, Origin]] = []

    @app.get("/admin/probe", dependencies=[Depends(public)])
    async def probe(request: Request) -> dict[str, bool]:
        seen.append((request.state.admin_identity, origin_of(request)))
        return {"ok": True}

    outer = over_mtls(AdminListener(app, client_cert_verified=True), certificate)
    transport = httpx.ASGITransport(app=outer, client=("127.0.0.1", 1))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="https://testserver") as http,
    ):
        status = (await http.get("/admin/probe")).status_code
    return status, seen


async def test_admin_request_is_attributed_to_the_peer_certificate(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """V16.2.1: request.state, the bastion.admin line and the audit origin name CN and serial (hex)."""
    caplog.set_level(logging.INFO)
    status, seen = await _probe(settings, PeerCertificate("alice", 0x5AF2))
    assert status == 200
    identity, origin = seen[0]
    assert identity == AdminIdentity(client_cert_verified=True, address="127.0.0.1", subject_cn="alice", serial="5af2")
    assert (origin.client_cert_cn, origin.client_cert_serial, origin.ip) == ("alice", "5af2", "127.0.0.1")
    logged = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "admin request"]
    assert (logged[0]["subject_cn"], logged[0]["serial"]) == ("alice", "5af2")


async def test_a_certificate_revoked_during_its_connection_gets_403(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """V12.1.4, V16.3.2: refused and logged; the route never runs."""
    caplog.set_level(logging.INFO)
    status, seen = await _probe(settings, PeerCertificate("bob", 0xB0B, revoked=True))
    assert (status, seen) == (403, [])
    messages = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    assert any(m.get("event") == "admin request with a revoked certificate" and m["serial"] == "b0b" for m in messages)
    assert not any(m.get("event") == "admin request" for m in messages)


@pytest.mark.parametrize(
    ("origin", "details"),
    [
        (
            Origin(ip="127.0.0.1", client_cert_cn="alice", client_cert_serial="5af2"),
            {"role": "ops", "client_cert": {"cn": "alice", "serial": "5af2"}},
        ),
        (Origin(ip="127.0.0.1"), {"role": "ops"}),  # the public listener, or a request without a certificate
    ],
)
async def test_audit_event_details_carry_the_client_certificate(
    tmp_path: Path, origin: Origin, details: dict[str, Any]
) -> None:
    db = open_database(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}")
    try:
        await db.run_sync(AuditEvent.__table__.create)  # type: ignore[attr-defined]
        async with transaction(db) as tx:
            record_event(tx, FrozenClock(), EventTag.ROLE_CHANGE, origin=origin, details={"role": "ops"})
        (event,) = await db.all(select(AuditEvent))
        assert event.details == details
    finally:
        await db.close()
