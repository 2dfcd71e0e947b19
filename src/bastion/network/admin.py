"""The admin listener's application: the same app, marked as the admin plane.

Transport (in the granian process, rustls): in mTLS mode the handshake fails
unless the client presents a certificate that chains to Bastion's CA, carries
``clientAuth``, is within its validity and is not on ``ca/crl.pem``. No
request from any other client reaches this code.

Attribution: granian 2.x does not pass the peer certificate (or any TLS
detail) to the ASGI application, so the app cannot tell *which* Bastion
certificate was used. Each admin request is therefore attributed to "a
verified Bastion client certificate" plus the client address, and
``subject_cn``/``serial`` stay ``None`` until the server can supply them.
The audit domain reads ``request.state.admin_identity``; it never guesses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.logging import get_logger
from bastion.network.ca import CaPaths
from bastion.network.ipfilter import LISTENER_KEY
from bastion.settings import Settings, load_settings

log = get_logger("bastion.admin")
CLIENT_CERT_KEY = "bastion.client_cert"


@dataclass(frozen=True)
class AdminIdentity:
    """Who made an admin request, as far as the server can prove it."""

    client_cert_verified: bool
    address: str
    # Unknown under granian (see the module docstring); never filled from client input.
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


def attribute(scope: Scope) -> AdminIdentity:
    """Record who made an admin request in ``request.state`` and the log.

    Called by the network guard after the IP policy passed, so the address is
    the real (proxy-resolved) client address.
    """
    client = scope.get("client")
    identity = AdminIdentity(
        client_cert_verified=bool((scope.get("extensions") or {}).get(CLIENT_CERT_KEY)),
        address=str(client[0]) if client else "",
    )
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
    return identity


def app_factory() -> ASGIApp:
    """Entry point of the admin listener's worker processes (settings from the environment)."""
    from bastion.app import app_factory as public_app_factory

    settings = load_settings()
    return AdminListener(public_app_factory(), client_cert_verified=admin_mode(settings) == "mtls")
