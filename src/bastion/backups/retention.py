"""Which backups ``backup prune`` keeps: a pure function of the list and the policy.

The rules are restic's and Borg's ``forget``/``prune`` (``--keep-last``,
``--keep-daily`` …), so an operator who knows those knows these:

- the newest ``keep_last`` complete backups are kept;
- ``keep_daily`` keeps the newest backup of each of the last N *days that
  have a backup* (not the last N calendar days: when backups stop for a
  month, pruning does not delete the last good ones because they have grown
  old); ``keep_weekly`` (ISO weeks) and ``keep_monthly`` likewise;
- a backup kept by any rule is kept; the rules are counted independently
  (the newest of today counts for ``keep_last`` and ``keep_daily`` both);
- days, weeks and months are UTC, the zone of the backups' names.

An incomplete backup (no valid signed sidecar: a ``.partial`` left by a
killed run, or a file whose sidecar never came) is deleted once it is older
than ``LEFTOVER_AGE``; a younger one may be a backup still being written by
another process. ``keep_last`` is at least 1 (settings), so the newest
complete backup is never deleted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["LEFTOVER_AGE", "Listed", "PrunePlan", "RetentionPolicy", "plan_prune"]

# A leftover younger than this may still be being written (a backup under way elsewhere).
LEFTOVER_AGE = dt.timedelta(hours=1)


class Listed(Protocol):
    """What retention reads of a listed backup (``archive.BackupInfo`` has these)."""

    @property
    def name(self) -> str: ...

    @property
    def created_at(self) -> dt.datetime: ...

    @property
    def complete(self) -> bool: ...


B = TypeVar("B", bound=Listed)


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int = 3
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 6

    def __post_init__(self) -> None:
        if self.keep_last < 1 or min(self.keep_daily, self.keep_weekly, self.keep_monthly) < 0:
            msg = "keep_last must be at least 1 and the other counts at least 0"
            raise ValueError(msg)


@dataclass(frozen=True)
class PrunePlan(Generic[B]):
    """The backups to keep (newest first, each with the rules that keep it) and to delete."""

    keep: list[tuple[B, tuple[str, ...]]]
    delete: list[B]
    # Incomplete backups old enough to be leftovers (a subset of ``delete``).
    leftovers: list[B]


def _day(at: dt.datetime) -> Hashable:
    return at.date()


def _week(at: dt.datetime) -> Hashable:
    iso = at.isocalendar()
    return (iso.year, iso.week)


def _month(at: dt.datetime) -> Hashable:
    return (at.year, at.month)


_BUCKETS: tuple[tuple[str, Callable[[dt.datetime], Hashable]], ...] = (
    ("daily", _day),
    ("weekly", _week),
    ("monthly", _month),
)


def plan_prune(backups: Sequence[B], policy: RetentionPolicy, *, now: dt.datetime) -> PrunePlan[B]:
    """Split ``backups`` (one destination's, any order) into kept and deleted under ``policy``.

    Ties in ``created_at`` are broken by name, so the plan does not depend
    on the order of the listing.
    """
    complete = sorted(
        (b for b in backups if b.complete),
        key=lambda b: (b.created_at.astimezone(dt.UTC), b.name),
        reverse=True,
    )
    reasons: dict[str, list[str]] = {b.name: [] for b in complete}
    for b in complete[: policy.keep_last]:
        reasons[b.name].append("last")
    counts = {"daily": policy.keep_daily, "weekly": policy.keep_weekly, "monthly": policy.keep_monthly}
    for rule, bucket_of in _BUCKETS:
        seen: set[Hashable] = set()
        for b in complete:
            if len(seen) >= counts[rule]:
                break
            bucket = bucket_of(b.created_at.astimezone(dt.UTC))
            if bucket not in seen:
                # The newest backup of a new day (week, month): the list is newest first.
                seen.add(bucket)
                reasons[b.name].append(rule)
    keep = [(b, tuple(reasons[b.name])) for b in complete if reasons[b.name]]
    delete = [b for b in complete if not reasons[b.name]]
    leftovers = [b for b in backups if not b.complete and now - b.created_at >= LEFTOVER_AGE]
    leftovers.sort(key=lambda b: (b.created_at, b.name))
    return PrunePlan(keep=keep, delete=delete + leftovers, leftovers=leftovers)
