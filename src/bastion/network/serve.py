"""``bastion serve``: one supervisor, one server process per listener.

Listeners: ``public`` (the API), ``admin`` (``/admin/*`` only, mTLS with
Bastion's CA) and, when ``server.redirect_port`` is set, ``redirect`` (plain
HTTP that only redirects to HTTPS). Each runs in its own child process. The
public and redirect listeners are granian servers: with one worker, granian
embedded in the listener's process (one process, not a granian main process
and its worker); with more, granian's main process and its workers. The
admin listener is uvicorn on Python's ``ssl``
(``bastion.network.adminserver``), because granian does not tell the
application which client certificate a connection used, and every admin
request is attributed to its certificate.

Processes (``launch``): ``bastion serve`` has the application loaded once it
has migrated, so it forks the public listener from that image, then
``exec``s ``bastion.network.supervisor``, which keeps the pid and none of
the memory. That supervisor starts the redirect listener, and the admin
listener at its first connection (``bastion serve`` binds the socket; the
connection waits in the backlog while the listener loads).

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

import asyncio
import ctypes
import datetime as dt
import errno
import gc
import importlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from bastion.logging import configure_server_logging, get_logger, server_log_format
from bastion.metrics import start_multiprocess
from bastion.network import supervisor as supervision
from bastion.network.ca import BastionCa, CaPaths
from bastion.network.listener import admin_mode
from bastion.network.startup import REPORT_ENV, report_and_exit
from bastion.network.tls import profile_of, server_context
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
    for listener in listeners:
        if listener.name == "admin" and listener.cert and listener.key:
            # The admin listener starts at its first connection: its TLS files
            # must be known to load now, when a bad one is one line at start-up.
            try:
                server_context(
                    profile_of(settings), listener.cert, listener.key, client_ca=listener.client_ca, crl=listener.crl
                )
            except (OSError, ValueError) as exc:
                raise ConfigError(f"the admin listener cannot load its TLS files: {exc}") from None
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


def launch(settings: Settings, listeners: list[Listener]) -> NoReturn:
    """Start ``listeners`` and become their supervisor (``bastion.network.supervisor``); never returns.

    Called by ``bastion serve`` after it migrated, with the application
    loaded: the public listener is forked from this process, so it does not
    import it all again (half of the start-up), unless a thread or an open
    database file makes a fork unsafe, when it starts afresh like the others.
    Then ``exec`` replaces this process, pid kept, with the supervisor, and
    the memory the application took here goes with it.
    """
    reports = Path(tempfile.mkdtemp(prefix="bastion-startup-"))
    # Before any listener exists: each process forked or spawned from here
    # writes its samples into this directory, and any one scrape sums them.
    metrics_dir = start_multiprocess()
    pid = os.getpid()
    running: dict[str, int] = {}
    start: list[str] = []
    on_connection: dict[str, int] = {}
    for listener in listeners:
        if listener.name == "public" and _fork_safe():
            running[listener.name] = _fork_listener(listener.name, reports, pid)
        elif listener.name == "admin":
            on_connection[listener.name] = _listening_socket(listener, settings.server.backlog)
        else:
            start.append(listener.name)
    plan_json = json.dumps(
        {
            "report_dir": str(reports),
            "metrics_dir": str(metrics_dir),
            "drain_seconds": _DRAIN_SECONDS,
            "log_format": server_log_format(settings),
            "log_level": settings.log.level,
            "running": running,
            "start": start,
            "on_connection": on_connection,
        }
    )
    sys.stdout.flush()
    sys.stderr.flush()
    # Held, not lost, until the supervisor has its handlers (the mask survives
    # exec; it unblocks them): a SIGTERM in between would kill it outright.
    signal.pthread_sigmask(signal.SIG_BLOCK, supervision.HANDLED)
    # -I -S: the standard library only, not even site-packages (see the module).
    os.execv(sys.executable, [sys.executable, "-I", "-S", supervision.__file__, plan_json])  # noqa: S606


def _fork_safe() -> bool:
    """Whether this process can fork a listener: one thread, and no database file open.

    A thread holding a lock at the fork would hold it forever in the child,
    and a SQLite connection must not cross a fork (sqlite.org/howtocorrupt.html).
    Migrations close their connections; this checks that they did.
    """
    if threading.active_count() != 1:
        return False
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:  # not Linux: no way to look, so no fork
        return False
    for fd in descriptors:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the directory's own descriptor, closed by now
            continue
        # Any SQLite file, wherever database_url puts it (its -wal and -shm too).
        if ".db" in Path(path).name or ".sqlite" in Path(path).name:
            return False
    return True


def _fork_listener(name: str, reports: Path, supervisor_pid: int) -> int:
    """Run listener ``name`` in a child of this process; its pid."""
    child = os.fork()
    if child:
        return child
    code = 1
    try:
        os.environ[REPORT_ENV] = str(reports / name)
        run_listener(name, supervisor_pid)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # this child must never return into the command
        log.exception("listener failed", listener=name)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _listening_socket(listener: Listener, backlog: int) -> int:
    """A socket listening on ``listener``'s address, inheritable, as a file descriptor."""
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind((listener.host, listener.port))
    listening.listen(backlog)
    listening.set_inheritable(True)
    return listening.detach()


def run_listener(name: str, supervisor: int | None = None) -> None:
    """Serve one listener in this process (the supervisor's child).

    ``supervisor``: the pid of ``bastion serve``; this process ends with it.
    """
    _end_with_parent(supervisor)
    if supervisor is not None:
        os.environ[supervision.SUPERVISOR_PID_ENV] = str(supervisor)
    try:
        settings = load_settings()
        configure_server_logging(settings)
        listener = next(item for item in plan(settings) if item.name == name)
        if listener.name == "admin":
            from bastion.network.adminserver import serve_admin

            if listener.cert is None or listener.key is None:
                raise ConfigError("the admin listener needs a TLS certificate and key")
            fd = os.environ.get(supervision.LISTENER_FD_ENV)
            serve_admin(
                settings,
                listener.target,
                host=listener.host,
                port=listener.port,
                fd=int(fd) if fd else None,
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
    from granian.constants import HTTPModes, Interfaces, SSLProtocols
    from granian.http import HTTP1Settings, HTTP2Settings

    server = settings.server
    options: dict[str, Any] = {
        "interface": Interfaces.ASGI,
        "address": listener.host,
        "port": listener.port,
        "http": HTTPModes.auto if listener.cert else HTTPModes.http1,
        "websockets": False,
        "backlog": server.backlog,
        # Granian holds one permit per established connection: the rest wait
        # in the kernel backlog instead of each costing the worker memory.
        "backpressure": server.max_connections,
        "http1_settings": HTTP1Settings(
            header_read_timeout=int(server.header_read_timeout * 1000),
            keep_alive=server.keep_alive,
            max_buffer_size=server.max_header_bytes,
        ),
        "http2_settings": HTTP2Settings(
            max_headers_size=server.max_header_bytes,
            max_concurrent_streams=100,
            keep_alive_interval=int(server.header_read_timeout * 1000),
            keep_alive_timeout=int(server.header_read_timeout),
        ),
        "ssl_cert": listener.cert,
        "ssl_key": listener.key,
        "ssl_protocol_min": SSLProtocols(profile_of(settings).min_version),
        "log_access": False,
        "log_dictconfig": GRANIAN_LOGGING,
        "factory": True,
    }
    if listener.workers == 1:
        _serve_embedded(listener, options)
        return
    from granian import Granian

    # Forked from `bastion serve`, which loads with the collector off; the
    # workers forked from here turn it back on with their app (bastion.asgi).
    gc.enable()
    Granian(
        listener.target,
        workers=listener.workers,
        respawn_interval=_RESPAWN_SECONDS,
        workers_kill_timeout=_DRAIN_SECONDS,
        **options,
    ).serve()


class _Quiet(logging.Filter):
    """Drops granian's "Embedded server is experimental!": said at every start, it tells an operator nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "experimental" not in record.getMessage()


def _serve_embedded(listener: Listener, options: dict[str, Any]) -> None:
    """One worker: granian serves on this process's event loop, no process of its own.

    A granian main process would only watch one worker: ~35 MiB and a fork
    for nothing. SIGTERM/SIGINT stop it (in-flight requests drain for up to
    ``_DRAIN_SECONDS``); SIGHUP starts a new worker in this process, which
    reads the certificate and key files again, and then stops the old one,
    as granian's main process does.
    """
    from granian.server.embed import Server

    module, _, name = listener.target.partition(":")
    factory = getattr(importlib.import_module(module), name)
    embedded = Server(factory, **options)
    logging.getLogger("_granian").addFilter(_Quiet())
    embedded.workers_kill_timeout = _DRAIN_SECONDS
    embedded.respawn_interval = _RESPAWN_SECONDS

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, embedded.stop)
        loop.add_signal_handler(signal.SIGHUP, embedded.reload)
        await embedded.serve()

    asyncio.run(serve())
