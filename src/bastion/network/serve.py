"""``bastion serve``: one supervisor, one server process per listener.

Listeners: ``public`` (the API), ``admin`` (``/admin/*`` only, mTLS with
Bastion's CA) and, when ``server.redirect_port`` is set, ``redirect`` (plain
HTTP that only redirects to HTTPS). Each runs in its own child process. The
public and redirect listeners are granian servers. The admin listener is
uvicorn on Python's ``ssl`` (``bastion.network.adminserver``), because granian
does not tell the application which client certificate a connection used,
and every admin request is attributed to its certificate.

Signals: SIGTERM/SIGINT stop every listener gracefully. SIGHUP is passed on:
granian then starts fresh workers, which read the certificate and key files
again, before stopping the old ones, so a renewed certificate is served
without dropping the listening socket; the admin listener rebuilds its TLS
context for the next connection. The admin listener also notices by itself
when its certificate, key, CA or CRL file changes (it looks on every new
connection), so `bastion ca revoke` takes effect at the next handshake.

Start-up failures: ``prepare`` checks that every listener's address can be
bound, so an address in use is one line before anything starts; a listener
that fails later (its app's lifespan refuses to start, say) reports one line
through ``bastion.network.startup`` and the supervisor exits 2 with it.

Orphans: every listener asks the kernel for SIGTERM when the supervisor dies
(``PR_SET_PDEATHSIG``), so `kill -9` of `bastion serve` does not leave its
listeners serving with nobody to stop them.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.logging import configure_server_logging, get_logger
from bastion.network.ca import BastionCa, CaPaths
from bastion.network.listener import admin_mode
from bastion.network.startup import REPORT_ENV, STARTUP_FAILED, report_and_exit
from bastion.network.tls import profile_of
from bastion.settings import ConfigError, Settings, load_settings

log = get_logger("bastion.network")

# Granian's own loggers hand their records to the root logger, which
# configure_logging has set up: one JSON format, one redaction, for every line.
GRANIAN_LOGGING = {
    "formatters": {},
    "handlers": {},
    "loggers": {name: {"handlers": [], "propagate": True, "level": "INFO"} for name in ("_granian", "granian.access")},
}
# How long old workers may finish in-flight requests after a reload or stop.
_DRAIN_SECONDS = 30
# On reload granian starts the new worker, waits this long, then stops the old
# one. The new worker must have bound its (SO_REUSEPORT) socket by then or new
# connections are refused for a moment.
_RESPAWN_SECONDS = 5.0


@dataclass(frozen=True)
class Listener:
    name: str
    host: str
    port: int
    target: str
    cert: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None
    crl: Path | None = None
    workers: int = 1

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.cert else 'http'}://{host}:{self.port}"


def plan(settings: Settings) -> list[Listener]:
    """The listeners ``settings`` ask for; ConfigError if one cannot run."""
    server = settings.server
    tls = tls_files(settings) if server.tls else (None, None)
    listeners = [
        Listener("public", server.host, server.port, "bastion.asgi:public_app", tls[0], tls[1], workers=server.workers)
    ]
    mode = admin_mode(settings)
    if mode != "off":
        if settings.admin.port in (server.port, server.redirect_port):
            raise ConfigError("admin.port must differ from server.port and server.redirect_port")
        cert, key = tls_files(settings)  # the admin plane is always TLS
        ca = CaPaths.of(settings)
        mtls = mode == "mtls"
        listeners.append(
            Listener(
                "admin",
                settings.admin.host,
                settings.admin.port,
                "bastion.asgi:admin_app",
                cert,
                key,
                client_ca=ca.certificate if mtls else None,
                crl=ca.crl if mtls else None,
            )
        )
    if server.redirect_port is not None:
        if server.redirect_port == server.port:
            raise ConfigError("server.redirect_port must differ from server.port")
        listeners.append(Listener("redirect", server.host, server.redirect_port, "bastion.asgi:redirect_app"))
    return listeners


def prepare(settings: Settings) -> list[Listener]:
    """``plan`` plus a freshly signed CRL for the admin listener (needs the master key).

    ConfigError, in one line, if a listener's address cannot be bound.
    """
    listeners = plan(settings)
    for listener in listeners:
        check_bindable(listener)
    if any(listener.crl for listener in listeners):
        BastionCa.open(settings).refresh_crl(now=dt.datetime.now(dt.UTC))
    return listeners


def check_bindable(listener: Listener) -> None:
    """Bind and release ``listener``'s address, to name the cause now rather than in a worker's traceback."""
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((listener.host, listener.port))
        except OSError as exc:
            where = f"the {listener.name} listener cannot listen on {listener.host}:{listener.port}"
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"{where}: the port is in use by another process; stop it or pick another") from None
            if exc.errno == errno.EACCES:
                raise ConfigError(f"{where}: ports below 1024 need privileges; pick a port from 1024 up") from None
            raise ConfigError(f"{where}: {exc.strerror or exc}") from None


def tls_files(settings: Settings) -> tuple[Path, Path]:
    cert, key = settings.cert_file, settings.key_file
    for path in (cert, key):
        if not path.is_file():
            raise ConfigError(f"TLS file {path} is missing; run `bastion init` or set server.cert_file/key_file")
    return cert, key


def supervise(listeners: list[Listener]) -> int:
    """Run every listener as a child process until a signal or a child's death; the exit code.

    A child that could not start has written its one-line cause to its
    report file: that line is printed once and the exit code is 2.
    """
    children: dict[str, subprocess.Popen[bytes]] = {}
    stop = threading.Event()
    reports = Path(tempfile.mkdtemp(prefix="bastion-startup-"))

    def on_stop(signum: int, frame: Any) -> None:
        stop.set()

    def on_hup(signum: int, frame: Any) -> None:
        for child in children.values():
            child.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    code = 0
    try:
        for listener in listeners:
            # A fixed argument list of our own module; settings travel in the environment.
            children[listener.name] = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "bastion.network", "listener", listener.name, str(os.getpid())],
                env={**os.environ, REPORT_ENV: str(reports / listener.name)},
            )
        while not stop.is_set():
            for name, child in children.items():
                if child.poll() is not None:
                    code = _exited(name, child.returncode, reports / name)
                    stop.set()
                    break
            stop.wait(0.2)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _DRAIN_SECONDS + 5
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        shutil.rmtree(reports, ignore_errors=True)
    return code


def _exited(name: str, returncode: int, report: Path) -> int:
    """Say why listener ``name`` ended; the supervisor's exit code."""
    try:
        cause = report.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        cause = []
    if cause:
        # Several workers may have failed alike: the first line says it.
        sys.stderr.write(f"error: the {name} listener did not start: {cause[0]}\n")
        return STARTUP_FAILED
    log.error("listener exited", listener=name, exit_code=returncode)
    return 1


def run_listener(name: str, supervisor: int | None = None) -> None:
    """Serve one listener in this process (the supervisor's child).

    ``supervisor``: the pid of ``bastion serve``; this process ends with it.
    """
    _end_with_parent(supervisor)
    try:
        settings = load_settings()
        configure_server_logging(settings)
        listener = next(item for item in plan(settings) if item.name == name)
        if listener.name == "admin":
            from bastion.network.adminserver import serve_admin

            if listener.cert is None or listener.key is None:
                raise ConfigError("the admin listener needs a TLS certificate and key")
            serve_admin(
                settings,
                listener.target,
                host=listener.host,
                port=listener.port,
                cert=listener.cert,
                key=listener.key,
                client_ca=listener.client_ca,
                crl=listener.crl,
                drain_seconds=_DRAIN_SECONDS,
            )
            return
        _serve_granian(settings, listener)
    # Any failure ends the listener with its one-line cause (granian, for one,
    # raises RuntimeError with a Rust backtrace for an address in use).
    except Exception as exc:  # noqa: BLE001 - reported, and the process exits 2
        report_and_exit(exc)


# linux/prctl.h
_PR_SET_PDEATHSIG = 1


def _end_with_parent(supervisor: int | None) -> None:
    """Have the kernel send this process SIGTERM when the supervisor dies, however it dies.

    A graceful stop, so the listener drains as after `bastion serve` got
    SIGTERM. Linux only (elsewhere a `kill -9` of the supervisor still leaves
    orphans). If the supervisor died before the request took effect, stop now.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("listener cannot ask to end with its supervisor", errno=ctypes.get_errno())
        return
    if supervisor is not None and os.getppid() != supervisor:
        raise SystemExit(0)


def _serve_granian(settings: Settings, listener: Listener) -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, SSLProtocols
    from granian.http import HTTP1Settings, HTTP2Settings

    server = settings.server
    Granian(
        listener.target,
        factory=True,
        interface=Interfaces.ASGI,
        address=listener.host,
        port=listener.port,
        workers=listener.workers,
        http=HTTPModes.auto if listener.cert else HTTPModes.http1,
        websockets=False,
        backlog=server.backlog,
        # Granian holds one permit per established connection: the rest wait
        # in the kernel backlog instead of each costing the worker memory.
        backpressure=server.max_connections,
        http1_settings=HTTP1Settings(
            header_read_timeout=int(server.header_read_timeout * 1000),
            keep_alive=server.keep_alive,
            max_buffer_size=server.max_header_bytes,
        ),
        http2_settings=HTTP2Settings(
            max_headers_size=server.max_header_bytes,
            max_concurrent_streams=100,
            keep_alive_interval=int(server.header_read_timeout * 1000),
            keep_alive_timeout=int(server.header_read_timeout),
        ),
        ssl_cert=listener.cert,
        ssl_key=listener.key,
        ssl_protocol_min=SSLProtocols(profile_of(settings).min_version),
        respawn_interval=_RESPAWN_SECONDS,
        workers_kill_timeout=_DRAIN_SECONDS,
        log_access=False,
        log_dictconfig=GRANIAN_LOGGING,
    ).serve()
