"""The admin listener's application: the same app, marked as the admin plane.

Transport (``bastion.network.adminserver``, Python's ``ssl``): in mTLS mode
the handshake fails unless the client presents a certificate that chains to
Bastion's CA, carries ``clientAuth``, is within its validity and is not on
``ca/crl.pem``. No request from any other client reaches this code.

Attribution: the server reads the verified leaf certificate once per
connection and puts it on every request's scope (``PEER_CERT_KEY``), so each
admin request is attributed to the certificate's subject CN and serial (hex,
as `bastion ca list` prints it) plus the client address: in
``request.state.admin_identity``, in the ``bastion.admin`` log line, in every
log line of the request, and, through the admin API's audit origin, in the
audit events it writes. The values come from the handshake only; nothing a
client sends in a request can set them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.http.problems import Forbidden
from bastion.logging import get_logger
from bastion.network.ca import CaPaths
from bastion.settings import Settings

log = get_logger("bastion.admin")
# Scope extensions only the server sets; clients cannot reach them.
LISTENER_KEY = "bastion.listener"
CLIENT_CERT_KEY = "bastion.client_cert"
PEER_CERT_KEY = "bastion.peer_cert"


@dataclass(frozen=True)
class PeerCertificate:
    """The client certificate the TLS handshake verified for this connection."""

    common_name: str
    serial: int
    # Listed on the CRL since the connection was opened (checked per request).
    revoked: bool = False

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")


@dataclass(frozen=True)
class AdminIdentity:
    """Who made an admin request, as far as the server can prove it."""

    client_cert_verified: bool
    address: str
    # From the verified client certificate; None without one (dev's open mode).
    subject_cn: str | None = None
    serial: str | None = None


def admin_mode(settings: Settings) -> Literal["off", "mtls", "open"]:
    """How the admin listener runs.

    ``mtls`` whenever Bastion's CA exists and certificates are required. Prod
    never runs ``open``: without the CA the admin listener stays off (and
    `bastion check` says so) rather than serve the admin plane unprotected.
    Dev runs ``open`` (no client certificates) until `bastion ca init`, and
    the banner says so.
    """
    if not settings.admin.enabled:
        return "off"
    required = settings.admin.require_client_cert or settings.mode == "prod"
    if required and CaPaths.of(settings).initialised():
        return "mtls"
    return "open" if settings.mode == "dev" else "off"


class AdminListener:
    """Marks every request as arriving on the admin listener, then attributes it."""

    def __init__(self, app: ASGIApp, *, client_cert_verified: bool) -> None:
        self.app = app
        self.client_cert_verified = client_cert_verified

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            extensions = dict(scope.get("extensions") or {})
            extensions[LISTENER_KEY] = "admin"
            extensions[CLIENT_CERT_KEY] = self.client_cert_verified
            scope = {**scope, "extensions": extensions}
        await self.app(scope, receive, send)


@contextmanager
def attributed(scope: Scope) -> Iterator[AdminIdentity]:
    """Record who made an admin request, for the duration of the request.

    Called by the network guard after the IP policy passed, so the address is
    the real (proxy-resolved) client address. Sets ``request.state.admin_identity``,
    writes the ``bastion.admin`` line and binds the certificate to every log
    line of the request. A certificate revoked after its connection was opened
    is refused here (403): revocation holds for open keep-alive connections too.
    """
    client = scope.get("client")
    extensions = scope.get("extensions") or {}
    peer = extensions.get(PEER_CERT_KEY)
    certificate = peer if isinstance(peer, PeerCertificate) else None
    identity = AdminIdentity(
        client_cert_verified=bool(extensions.get(CLIENT_CERT_KEY)),
        address=str(client[0]) if client else "",
        subject_cn=certificate.common_name if certificate else None,
        serial=certificate.serial_hex if certificate else None,
    )
    if certificate is not None and certificate.revoked:
        log.warning(
            "admin request with a revoked certificate",
            client_ip=identity.address,
            subject_cn=identity.subject_cn,
            serial=identity.serial,
        )
        raise Forbidden
    scope.setdefault("state", {})["admin_identity"] = identity
    log.info(
        "admin request",
        method=scope.get("method"),
        path=scope.get("path"),
        client_ip=identity.address,
        client_cert="verified" if identity.client_cert_verified else "none",
        subject_cn=identity.subject_cn,
        serial=identity.serial,
    )
    if certificate is None:
        yield identity
        return
    with structlog.contextvars.bound_contextvars(
        client_cert_cn=identity.subject_cn, client_cert_serial=identity.serial
    ):
        yield identity


def listener_of(scope: Scope) -> Literal["public", "admin"]:
    """Which listener a request arrived on (set by ``AdminListener``, never by the client)."""
    extensions = scope.get("extensions") or {}
    return "admin" if extensions.get(LISTENER_KEY) == "admin" else "public"
