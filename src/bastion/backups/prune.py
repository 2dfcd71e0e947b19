"""``backup prune``: apply the retention policy to every destination.

Each destination is pruned on its own listing (a copy that failed to reach
one destination does not make another lose a backup). A backup is deleted
sidecar first, then the file: a half-deleted backup is seen as incomplete,
never as complete with its file missing. The erasure ledger and any other
file that is not a backup's is never touched.

Listing here does not check the sidecars' signatures: with the wrong key
(another instance's export) every backup would look incomplete and be
deleted after an hour. Whoever can write to a destination can delete from
it anyway; what prune must never do is delete on a false reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from bastion.audit import EventTag, Origin, Outcome, record_event
from bastion.backups.archive import PARTIAL_SUFFIX, BackupInfo, list_backups
from bastion.backups.destinations import Destination
from bastion.backups.manifest import SIDECAR_SUFFIX
from bastion.backups.retention import PrunePlan, RetentionPolicy, plan_prune
from bastion.clock import Clock
from bastion.db import Database, transaction
from bastion.settings import BackupSettings

__all__ = ["PruneResult", "policy_of", "prune", "prune_destination"]

log = structlog.get_logger("bastion.backups")


@dataclass(frozen=True)
class PruneResult:
    destination: str
    plan: PrunePlan[BackupInfo]

    @property
    def deleted(self) -> list[str]:
        return [b.name for b in self.plan.delete]

    @property
    def kept(self) -> list[str]:
        return [b.name for b, _ in self.plan.keep]


def policy_of(settings: BackupSettings) -> RetentionPolicy:
    return RetentionPolicy(
        keep_last=settings.keep_last,
        keep_daily=settings.keep_daily,
        keep_weekly=settings.keep_weekly,
        keep_monthly=settings.keep_monthly,
    )


def prune_destination(
    destination: Destination, policy: RetentionPolicy, *, now: dt.datetime, dry_run: bool = False
) -> PruneResult:
    """Plan and (unless ``dry_run``) delete in one destination."""
    plan = plan_prune(list_backups(destination), policy, now=now)
    if not dry_run:
        for backup in plan.delete:
            for name in (backup.name + SIDECAR_SUFFIX, backup.name, backup.name + PARTIAL_SUFFIX):
                destination.delete(name)
    return PruneResult(destination.name, plan)


async def prune(
    settings: BackupSettings,
    clock: Clock,
    db: Database,
    destinations: Sequence[Destination],
    *,
    dry_run: bool = False,
    origin: Origin | None = None,
) -> list[PruneResult]:
    """Prune every destination; one ``backup:prune`` event (success, or failure naming the reason)."""
    policy = policy_of(settings)
    now = clock.now()
    results: list[PruneResult] = []
    try:
        for destination in destinations:
            results.append(await asyncio.to_thread(prune_destination, destination, policy, now=now, dry_run=dry_run))
    except Exception as exc:
        if not dry_run:
            # The prune's own failure is what the operator must see, even when the event cannot be written.
            with contextlib.suppress(Exception):
                details: dict[str, object] = {"reason": str(exc)[:500], "results": _summary(results)}
                await _record(db, clock, origin, Outcome.FAILURE, details)
        raise
    if not dry_run:
        await _record(db, clock, origin, Outcome.SUCCESS, {"results": _summary(results)})
    return results


def _summary(results: Sequence[PruneResult]) -> list[dict[str, object]]:
    return [{"destination": r.destination, "kept": len(r.kept), "deleted": r.deleted} for r in results]


async def _record(
    db: Database, clock: Clock, origin: Origin | None, outcome: Outcome, details: dict[str, object]
) -> None:
    async with transaction(db) as tx:
        record_event(tx, clock, EventTag.BACKUP_PRUNE, origin=origin or Origin.cli(), outcome=outcome, details=details)
