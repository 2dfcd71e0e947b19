"""Certificates and ``*_FILE`` secrets, reloaded when their files change.

The listeners already reload on SIGHUP (``bastion.network.serve``): granian
starts fresh workers, which read the certificate and key again, and stops
the old ones once they have drained (no dropped socket, no refused
connection); each new worker's lifespan builds its services from settings
whose ``*_FILE`` secrets are read again (``bastion.settings.reread_secret_files``);
the admin listener rebuilds its TLS context for the next connection. What
this module adds is noticing: :class:`FileWatch` compares the files' stat
(inode, mtime, size) on every tick of :class:`FileReloader`, a job of every
serving process (not leased: each instance has its own files to watch), and
on a change it records ``ROTATION_RELOAD`` and sends SIGHUP to the supervisor (its pid
is in ``BASTION_SUPERVISOR_PID``), which passes it on to every listener: a
graceful worker restart. A change is applied once the files have stayed
the same for one tick (a copy under way is not read half-written) and, for
the certificate, once it loads with the key (renewal writes the two files
one after the other): until then the reloader waits and says so in the log.

Which secrets a SIGHUP applies without a restart: ``database_url``,
``redis_url``, ``mail.smtp_password``, ``alerts.webhook_secret``,
``backups.s3_secret_access_key`` on the public listener (its workers are
rebuilt). Needing a restart of ``bastion serve``: the master key (it
unwraps the keystore; changing it means rewrapping the keyring files) and
anything the admin listener uses (uvicorn rebuilds its TLS context on
SIGHUP, not its application).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

from bastion.audit import EventTag, record_event
from bastion.clock import Clock
from bastion.db import Database, transaction
from bastion.network.supervisor import SUPERVISOR_PID_ENV
from bastion.network.tls import profile_of, server_context
from bastion.rotation.rewrap import ORIGIN
from bastion.security import file_stamp
from bastion.settings import Settings, secret_file_variables

log = structlog.get_logger("bastion.rotation")
# How often the files are looked at.
WATCH_SECONDS = 5.0


class FileWatch:
    """Which of some files changed since the last look (the first look sees none change)."""

    def __init__(self, files: dict[str, Path]) -> None:
        self._files = files
        self._stamps = {name: file_stamp(path) for name, path in files.items()}

    def changed(self) -> list[str]:
        """The names whose file was replaced, edited, created or removed since the last call."""
        changed = []
        for name, path in self._files.items():
            stamp = file_stamp(path)
            if stamp != self._stamps[name]:
                self._stamps[name] = stamp
                changed.append(name)
        return changed


def tls_pair_loads(settings: Settings) -> str | None:
    """None if the certificate and key load as a pair (a listener would start with them), else why not.

    Renewal tools write the two files one after the other: between the two
    writes the pair does not match, and a worker started then would fail.
    """
    try:
        server_context(profile_of(settings), settings.cert_file, settings.key_file)
    except (OSError, ssl.SSLError) as exc:
        return str(exc.strerror or exc)
    return None


def tls_files(settings: Settings) -> dict[str, Path]:
    """The served certificate and key (the admin listener also watches its CA and CRL itself)."""
    return {"server.cert_file": settings.cert_file, "server.key_file": settings.key_file}


def secret_files(environ: Iterable[tuple[str, str]] | None = None) -> dict[str, Path]:
    """``BASTION_…_FILE`` variables that are set, by variable name (the master key's left out: restart)."""
    env = dict(environ if environ is not None else os.environ.items())
    return {name: Path(env[name]) for name in secret_file_variables() if env.get(name)}


def signal_listeners() -> bool:
    """SIGHUP to the supervisor of ``bastion serve`` (it passes it on); False when there is none."""
    pid = os.environ.get(SUPERVISOR_PID_ENV)
    if not pid or not pid.isdigit():
        log.warning("files changed but no supervisor to reload: restart to apply them")
        return False
    try:
        os.kill(int(pid), signal.SIGHUP)
    except OSError as exc:
        log.warning("cannot signal the supervisor", pid=pid, error=exc.strerror)
        return False
    return True


class FileReloader:
    """The per-process file watch of ``serve``: every ``interval`` seconds, :meth:`reload_changed`.

    ``start``/``stop`` match the runtime's ``Job``. A failing look is logged
    and the loop goes on: a background job never crashes the process.
    """

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        db: Database,
        *,
        reload: Callable[[], bool] = signal_listeners,
        interval: float = WATCH_SECONDS,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.db = db
        self._reload = reload
        self._interval = interval
        self._files = FileWatch({**tls_files(settings), **secret_files()})
        self._settling: set[str] = set()  # changed, not applied yet
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="rotation-reload")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.reload_changed()
            except Exception as exc:  # noqa: BLE001 - a background job logs and retries, never crashes the process
                log.error("background job failed", job="rotation-reload", error=type(exc).__name__)

    async def reload_changed(self) -> list[str]:
        """Record and apply (SIGHUP to the supervisor) a change of the certificate or a secret file.

        Applied once the files have stayed as they are for a tick, and, for the
        certificate, once it loads with its key; until then nothing is reloaded.
        """
        moving = self._files.changed()
        if moving:
            # Seen changing now: apply at the next tick if they stay so.
            self._settling.update(moving)
            return []
        if not self._settling:
            return []
        changed = sorted(self._settling)
        if any(name.startswith("server.") for name in changed):
            problem = tls_pair_loads(self.settings)
            if problem is not None:
                log.warning("certificate changed but does not load with its key yet; not reloading", error=problem)
                return []
        self._settling.clear()
        async with transaction(self.db) as tx:
            record_event(
                tx, self.clock, EventTag.ROTATION_RELOAD, origin=ORIGIN, details={"files": changed},
            )  # fmt: skip
        log.info("files changed: reloading the listeners", files=changed)
        self._reload()
        return changed
