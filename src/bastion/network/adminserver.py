"""The admin listener's server: uvicorn's h11 protocol on Python's ``ssl``.

Why not granian, like the other listeners: granian 2.x does not pass the peer
certificate (or any TLS detail) to the application, so requests could not be
attributed to *which* Bastion certificate made them. OpenSSL through asyncio
hands the verified certificate to the protocol, and the admin plane needs no
more speed than uvicorn's h11 gives.

Per connection:

1. The handshake must finish within ``server.header_read_timeout``.
2. ``ReloadingContext`` gives it the TLS context in force: it looks at the
   certificate, key, CA and CRL files (a ``stat`` each) on every new
   connection and rebuilds the context when one changed, or after SIGHUP.
   So a certificate revoked with `bastion ca revoke` is refused from the
   next handshake on, with no reload window, and a renewed server
   certificate is served without a restart.
3. ``AdminProtocol`` reads the verified leaf certificate once, and every
   request on the connection carries it in its scope: the ASGI ``tls``
   extension, and ``PEER_CERT_KEY`` for ``bastion.network.listener`` (which
   refuses a certificate revoked since the connection opened).
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import socket
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn import Config, Server
from uvicorn.protocols.http.h11_impl import H11Protocol

from bastion.logging import get_logger
from bastion.network.listener import PEER_CERT_KEY, PeerCertificate
from bastion.network.tls import profile_of, server_context
from bastion.security.x509 import certificate_facts_der, revoked_serials
from bastion.settings import Settings

log = get_logger("bastion.network")

# ASGI TLS extension: the TLS version as its protocol number.
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}

_Stamp = tuple[int, int, int]


class ReloadingContext(ssl.SSLContext):
    """An ``SSLContext`` for an asyncio server that hands each new connection the current build.

    asyncio keeps the context it was given for the server's lifetime and calls
    ``wrap_bio`` once per accepted connection, which is where this picks the
    context built from the files as they are now. This object's own OpenSSL
    context has no certificate, so should anything use it directly, or a
    rebuild fail, every handshake fails: closed, never open.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> ReloadingContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)

    def __init__(self, build: Callable[[], ssl.SSLContext], files: Sequence[Path], crl: Path | None) -> None:
        self.verify_mode = ssl.CERT_REQUIRED
        self.minimum_version = ssl.TLSVersion.TLSv1_3
        self._build = build
        self._files = tuple(files)
        self._crl = crl
        self._stale = False
        # At start-up a file that does not load is fatal (raised to the caller).
        self._stamps = self._stamp()
        self._current: ssl.SSLContext | None = build()
        self._revoked = revoked_serials(crl.read_bytes()) if crl else frozenset[int]()

    def reload(self) -> None:
        """Rebuild before the next connection even if no file changed (SIGHUP)."""
        self._stale = True

    def refresh(self) -> ssl.SSLContext | None:
        """The context in force, rebuilt first if a file changed; None while the files do not load."""
        stamps = self._stamp()
        if stamps == self._stamps and not self._stale:
            return self._current
        self._stale = False
        try:
            context = self._build()
            revoked = revoked_serials(self._crl.read_bytes()) if self._crl else frozenset[int]()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            # Refuse everyone until the files load again (a renewal half
            # written, a CRL being replaced): the old context may trust a
            # certificate the new CRL revokes. The next connection tries again.
            log.error("admin listener cannot load its TLS files; refusing connections", error=str(exc))
            self._current = None
            self._stale = True
            return None
        self._current, self._revoked, self._stamps = context, revoked, stamps
        log.info("admin listener loaded its TLS files", files=[str(path) for path in self._files])
        return context

    def is_revoked(self, serial: int) -> bool:
        """Whether the CRL in force lists ``serial`` (refreshed first).

        While the files do not load, every certificate counts as revoked, as
        every handshake fails then.
        """
        return self.refresh() is None or serial in self._revoked

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        context = self.refresh()
        if context is None:
            return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        return context.wrap_bio(incoming, outgoing, server_side, server_hostname, session)

    def _stamp(self) -> tuple[_Stamp, ...]:
        stamps = []
        for path in self._files:
            try:
                info = path.stat()
            except FileNotFoundError:
                stamps.append((0, 0, 0))
            else:
                # A rename (atomic replace) changes the inode; an in-place write the time or size.
                stamps.append((info.st_ino, info.st_mtime_ns, info.st_size))
        return tuple(stamps)


class _WithPeerCertificate:
    """Puts one connection's TLS facts on each of its requests' scopes."""

    def __init__(
        self, app: ASGIApp, tls: dict[str, Any], certificate: PeerCertificate | None, context: ReloadingContext
    ) -> None:
        self.app = app
        self.tls = tls
        self.certificate = certificate
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = self.tls
            if self.certificate is not None:
                revoked = self.context.is_revoked(self.certificate.serial)
                extensions[PEER_CERT_KEY] = dataclasses.replace(self.certificate, revoked=revoked)
            scope = {**scope, "extensions": extensions}
        await self.app(scope, receive, send)


class AdminProtocol(H11Protocol):
    """uvicorn's h11 protocol, plus the verified client certificate on every request."""

    context: ClassVar[ReloadingContext]
    require_client_cert: ClassVar[bool]
    # Seconds a new connection may stay silent before its first request.
    first_request_timeout: ClassVar[float]

    @classmethod
    def serving(
        cls, context: ReloadingContext, *, require_client_cert: bool, first_request_timeout: float
    ) -> type[AdminProtocol]:
        attributes = {
            "context": context,
            "require_client_cert": require_client_cert,
            "first_request_timeout": first_request_timeout,
        }
        return type(cls.__name__, (cls,), attributes)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if not isinstance(ssl_object, ssl.SSLObject):
            transport.close()  # not TLS: cannot happen on this server
            return
        der = ssl_object.getpeercert(binary_form=True)
        if der is None and self.require_client_cert:
            transport.close()  # CERT_REQUIRED failed the handshake already; never serve without one
            return
        certificate = None
        chain: list[str] = []
        name = None
        if der is not None:
            try:
                facts = certificate_facts_der(der)
            except ValueError:
                log.exception("admin listener cannot read a verified client certificate")
                transport.close()
                return
            certificate = PeerCertificate(common_name=facts.common_name, serial=facts.serial)
            chain = [ssl.DER_cert_to_PEM_cert(der)]
            name = facts.subject
        version = ssl_object.version()
        tls = {
            "server_cert": None,
            "client_cert_chain": chain,
            "client_cert_name": name,
            "client_cert_error": None,
            "tls_version": _TLS_VERSIONS.get(version) if version else None,
            "cipher_suite": None,  # Python's ssl names the suite but does not give its number
        }
        self.app = _WithPeerCertificate(self.app, tls, certificate, self.context)
        # uvicorn arms its idle timer only after a response; arm it now too, so
        # a connection that never sends a request does not stay open.
        self.timeout_keep_alive_task = self.loop.call_later(self.first_request_timeout, self.timeout_keep_alive_handler)


class _HandshakeTimeoutLoop(asyncio.SelectorEventLoop):
    """An event loop whose TLS servers give each client ``handshake_timeout`` seconds to finish the handshake.

    uvicorn creates its server without ``ssl_handshake_timeout``, so asyncio's
    default (60 s) would apply; this is where the setting can be passed.
    """

    def __init__(self, handshake_timeout: float) -> None:
        super().__init__()
        self.handshake_timeout = handshake_timeout

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", self.handshake_timeout)
        return await super().create_server(*args, **kwargs)


def serve_admin(
    settings: Settings,
    target: str,
    *,
    host: str,
    port: int,
    cert: Path,
    key: Path,
    client_ca: Path | None,
    crl: Path | None,
    drain_seconds: int,
    fd: int | None = None,
) -> None:
    """Serve the admin listener's app, the factory ``target`` names
    (``module:function``), in this process until SIGTERM or SIGINT.

    ``drain_seconds``: how long in-flight requests may finish after SIGTERM.
    ``fd``: a socket already listening on ``host:port`` (the supervisor's,
    whose first connection started this process) instead of binding one.
    """
    profile = profile_of(settings)
    files = [path for path in (cert, key, client_ca, crl) if path is not None]

    def build() -> ssl.SSLContext:
        return server_context(profile, cert, key, client_ca=client_ca, crl=crl)

    try:
        context = ReloadingContext(build, files, crl)
    except (OSError, ValueError) as exc:
        log.error("admin listener cannot load its TLS files", error=str(exc))
        raise SystemExit(1) from None
    # The supervisor passes SIGHUP on (certificate renewal); uvicorn handles only INT and TERM.
    signal.signal(signal.SIGHUP, lambda signum, frame: context.reload())
    server = settings.server
    config = Config(
        target,
        factory=True,
        host=host,
        port=port,
        http=AdminProtocol.serving(
            context, require_client_cert=client_ca is not None, first_request_timeout=server.header_read_timeout
        ),
        ws="none",
        lifespan="on",
        interface="asgi3",
        ssl_context_factory=lambda config, default: context,
        # Bastion resolves X-Forwarded-For itself, from trusted proxies only.
        proxy_headers=False,
        server_header=False,
        log_config=None,  # configure_logging's JSON handler, with redaction
        access_log=False,
        backlog=server.backlog,
        limit_concurrency=server.max_connections,
        h11_max_incomplete_event_size=server.max_header_bytes,
        # Idle keep-alive connections close after header_read_timeout, as on granian.
        timeout_keep_alive=max(1, round(server.header_read_timeout)) if server.keep_alive else 0,
        timeout_graceful_shutdown=drain_seconds,
    )
    sockets = [socket.socket(fileno=fd)] if fd is not None else None
    with asyncio.Runner(loop_factory=lambda: _HandshakeTimeoutLoop(server.header_read_timeout)) as runner:
        runner.run(Server(config).serve(sockets=sockets))
