"""Start-up failures of a listener, reported to the supervisor as one line.

A listener's application is built and started in a server worker (granian's,
or uvicorn's for the admin listener), two processes below ``bastion serve``.
Left alone, a failure there (a refused route, a database that does not
answer, an address in use) comes out as the servers' own tracebacks, one per
worker and in two languages, with the cause somewhere inside. Instead the
failing process writes one line to the file the supervisor named in
``BASTION_STARTUP_REPORT`` and exits with code 2; the supervisor prints that
line once, as ``error: …``, and exits 2 too. The full traceback goes to the
log at debug level, for whoever needs it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.logging import get_logger, redact
from bastion.settings import ConfigError

REPORT_ENV = "BASTION_STARTUP_REPORT"
# The exit code of a process that could not start (the CLI's code for a refusal).
STARTUP_FAILED = 2

log = get_logger("bastion.network")


def one_line(exc: BaseException) -> str:
    """The cause of ``exc`` in one line, redacted like a log line."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, ConfigError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return str(redact(None, "error", {"event": text})["event"])


def report_and_exit(exc: BaseException) -> NoReturn:
    """Hand the supervisor the one-line cause of ``exc`` and end this process with code 2.

    ``os._exit``: the server around us would otherwise log the exception again
    with its traceback, per worker; nothing has started that needs stopping.
    """
    log.debug("start-up failed", exc_info=exc)
    line = one_line(exc)
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as report:
            report.write(line + "\n")
    else:
        sys.stderr.write(f"error: {line}\n")
    sys.stderr.flush()
    os._exit(STARTUP_FAILED)


class StartupGuard:
    """An ASGI app whose lifespan start-up, should it fail, is reported in one line (``report_and_exit``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        started = False
        failure: str | None = None

        async def send_unless_failed(message: Message) -> None:
            nonlocal started, failure
            if message["type"] == "lifespan.startup.failed":
                # Starlette's message is a formatted traceback, and it raises next.
                failure = str(message.get("message") or "start-up failed").strip().splitlines()[-1]
                return
            started = started or message["type"] == "lifespan.startup.complete"
            await send(message)

        try:
            await self.app(scope, receive, send_unless_failed)
        except Exception as exc:
            if started:
                raise
            report_and_exit(exc)
        if failure is not None:
            report_and_exit(RuntimeError(failure))


def guarded(factory: Callable[[], ASGIApp]) -> ASGIApp:
    """``factory()`` wrapped in a ``StartupGuard``; a factory that raises is reported too."""
    try:
        app = factory()
    except Exception as exc:  # noqa: BLE001 - reported, and the process exits 2
        report_and_exit(exc)
    return StartupGuard(app)
