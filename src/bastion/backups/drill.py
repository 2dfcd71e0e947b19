"""The restore drill: prove the newest backup restores, on schedule and on demand.

``bastion backup drill --identity F`` (and ``serve`` on ``[backups]
drill_schedule`` when ``drill_identity_file`` is set) takes the newest
complete backup of the first destination that has one and:

1. checks its sidecar's signature and the file's size and SHA-256 against
   the live keystore's notary keys (or ``--key``);
2. with the identity: what ``backup verify --identity`` does
   (``bastion.backups.verify``): decrypts and unpacks it into a scratch
   directory (every part's hash and the inner signature checked), opens the
   database — ``PRAGMA integrity_check`` on the SQLite file, or
   ``pg_restore`` into a scratch PostgreSQL database created for the drill
   and dropped after it — and compares every table's row count and content
   hash with the manifest.

Without the identity (the server holds only the recipients' public keys)
the drill is step 1 only, and says so: its event has ``"full": false``.
Every drill is one ``backup:drill`` event, success or failure (the built-in
alert rule ``backup-drill-failed`` fires on the latter), with the backup's
id and name, the seconds it took, and the reason of a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from bastion.audit import EventTag, Origin, Outcome, record_event
from bastion.backups.archive import BackupInfo, Progress, list_backups
from bastion.backups.destinations import Destination, LocalDestination
from bastion.backups.errors import BackupUnavailable
from bastion.backups.manifest import SIDECAR_SUFFIX
from bastion.backups.verify import verify_backup
from bastion.clock import Clock
from bastion.db import Database, transaction

__all__ = ["DrillResult", "drill", "newest_backup"]

log = structlog.get_logger("bastion.backups")


@dataclass(frozen=True)
class DrillResult:
    name: str
    id: str
    full: bool
    seconds: float
    destination: str


def newest_backup(destinations: Sequence[Destination], vkeys: Sequence[str]) -> tuple[Destination, BackupInfo]:
    """The newest complete, validly signed backup of the first destination holding one."""
    for destination in destinations:
        complete = [b for b in list_backups(destination, vkeys) if b.complete]
        if complete:
            return destination, complete[-1]
    raise BackupUnavailable("no complete backup to drill: run `bastion backup create` first")


@contextlib.contextmanager
def _local_copy(destination: Destination, name: str, scratch: Path) -> Iterator[Path]:
    """The backup file and its sidecar as local files (copied out of a remote destination)."""
    if isinstance(destination, LocalDestination):
        yield destination.path / name
        return
    destination.get(name, scratch / name)
    destination.get(name + SIDECAR_SUFFIX, scratch / (name + SIDECAR_SUFFIX))
    yield scratch / name


async def drill(
    *,
    clock: Clock,
    db: Database,
    destinations: Sequence[Destination],
    vkeys: Sequence[str],
    identity_text: str | None,
    postgres_url: str | None,
    origin: Origin | None = None,
    progress: Progress | None = None,
) -> DrillResult:
    """Run one drill (see the module) and record its ``backup:drill`` event; raises on failure."""
    started = time.monotonic()
    details: dict[str, object] = {"full": identity_text is not None}
    try:
        destination, newest = await asyncio.to_thread(newest_backup, destinations, vkeys)
        details |= {"id": newest.id, "name": newest.name, "destination": destination.name}
        scratch = Path(tempfile.mkdtemp(prefix="bastion-drill-"))
        try:
            with _local_copy(destination, newest.name, scratch) as path:
                # The same checks as `backup verify --identity`: one way to tell a good backup.
                await verify_backup(
                    path, vkeys, identity_text=identity_text, scratch_url=postgres_url, progress=progress
                )
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)
    except Exception as exc:
        details |= {"seconds": round(time.monotonic() - started, 3), "reason": str(exc)[:500]}
        log.error("backup drill failed", reason=str(exc))
        # The drill's own failure is what the operator must see, even when the event cannot be written.
        with contextlib.suppress(Exception):
            await _record(db, clock, origin, Outcome.FAILURE, details)
        raise
    seconds = time.monotonic() - started
    details["seconds"] = round(seconds, 3)
    await _record(db, clock, origin, Outcome.SUCCESS, details)
    return DrillResult(newest.name, newest.id, identity_text is not None, seconds, destination.name)


async def _record(
    db: Database, clock: Clock, origin: Origin | None, outcome: Outcome, details: dict[str, object]
) -> None:
    async with transaction(db) as tx:
        record_event(tx, clock, EventTag.BACKUP_DRILL, origin=origin or Origin.cli(), outcome=outcome, details=details)
