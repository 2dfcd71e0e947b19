"""Retention (``backup prune``): which backups are kept, as a pure function."""

from __future__ import annotations

import datetime as dt
import random  # noqa: TID251 - seeded, reproducible test data, not a secret
from dataclasses import dataclass

import pytest

from bastion.backups.retention import LEFTOVER_AGE, RetentionPolicy, plan_prune


@dataclass(frozen=True)
class B:
    name: str
    created_at: dt.datetime
    complete: bool = True


def at(day: str, hour: int = 3) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(hour=hour, tzinfo=dt.UTC)


def backup(when: dt.datetime, *, complete: bool = True) -> B:
    return B(f"bastion-{when:%Y%m%dT%H%M%SZ}-00000000", when, complete)


def daily_backups(first: str, days: int, *, per_day: int = 1) -> list[B]:
    start = at(first, 0)
    return [backup(start + dt.timedelta(days=d, hours=1 + 6 * i)) for d in range(days) for i in range(per_day)]


def kept(backups: list[B], policy: RetentionPolicy, now: dt.datetime | None = None) -> list[str]:
    plan = plan_prune(backups, policy, now=now or at("2030-01-01"))
    return [b.name for b, _ in plan.keep]


NOW = at("2026-07-01", 12)


def test_keep_last_only() -> None:
    backups = daily_backups("2026-06-01", 10)
    plan = plan_prune(backups, RetentionPolicy(keep_last=3, keep_daily=0, keep_weekly=0, keep_monthly=0), now=NOW)
    assert [b.created_at.day for b, _ in plan.keep] == [10, 9, 8]
    assert all(reasons == ("last",) for _, reasons in plan.keep)
    assert sorted(b.created_at.day for b in plan.delete) == list(range(1, 8))
    assert plan.leftovers == []


def test_daily_keeps_the_newest_of_each_day() -> None:
    """Four backups a day: keep_daily=3 keeps the last one of each of the three newest days."""
    backups = daily_backups("2026-06-01", 5, per_day=4)
    plan = plan_prune(backups, RetentionPolicy(keep_last=1, keep_daily=3, keep_weekly=0, keep_monthly=0), now=NOW)
    assert [(b.created_at.day, b.created_at.hour) for b, _ in plan.keep] == [(5, 19), (4, 19), (3, 19)]
    assert plan.keep[0][1] == ("last", "daily")
    assert len(plan.delete) == 20 - 3


def test_days_without_backups_do_not_count() -> None:
    """Backups stopped for a month: keep_daily still keeps the last N days that had one (restic's rule)."""
    backups = daily_backups("2026-05-01", 10)
    policy = RetentionPolicy(keep_last=1, keep_daily=7, keep_weekly=0, keep_monthly=0)
    names = kept(backups, policy, now=at("2026-07-01"))
    assert [n[14:16] for n in names] == ["10", "09", "08", "07", "06", "05", "04"]


def test_weekly_uses_iso_weeks() -> None:
    # 2026-06-28 is a Sunday (ISO week 26), 2026-06-29 a Monday (week 27).
    backups = [backup(at("2026-06-27")), backup(at("2026-06-28")), backup(at("2026-06-29"))]
    policy = RetentionPolicy(keep_last=1, keep_daily=0, keep_weekly=2, keep_monthly=0)
    plan = plan_prune(backups, policy, now=NOW)
    assert [b.created_at.day for b, _ in plan.keep] == [29, 28]
    assert [b.created_at.day for b in plan.delete] == [27]


def test_iso_week_across_new_year() -> None:
    """2026-12-31 (Thursday) and 2027-01-01 (Friday) fall in the same ISO week 53 of 2026."""
    backups = [backup(at("2026-12-31")), backup(at("2027-01-01"))]
    policy = RetentionPolicy(keep_last=1, keep_daily=0, keep_weekly=5, keep_monthly=0)
    assert [b.created_at.day for b, _ in plan_prune(backups, policy, now=NOW).keep] == [1]


def test_monthly_keeps_the_newest_of_each_month() -> None:
    backups = daily_backups("2026-01-15", 120)
    policy = RetentionPolicy(keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=3)
    plan = plan_prune(backups, policy, now=NOW)
    assert [b.created_at.date().isoformat() for b, _ in plan.keep] == ["2026-05-14", "2026-04-30", "2026-03-31"]


def test_default_policy_over_a_year_of_daily_backups() -> None:
    """The defaults (3 last, 7 daily, 4 weekly, 6 monthly) over 365 daily backups keep a bounded set."""
    backups = daily_backups("2025-07-01", 365)
    plan = plan_prune(backups, RetentionPolicy(), now=NOW)
    days = [b.created_at.date() for b, _ in plan.keep]
    newest = max(b.created_at.date() for b in backups)
    # 7 daily (covering the 3 last), up to 4 weekly of which some overlap, 6 monthly.
    assert days[:7] == [newest - dt.timedelta(days=d) for d in range(7)]
    assert len(days) <= 3 + 7 + 4 + 6
    assert len(set(days)) == len(days)
    assert len(plan.keep) + len(plan.delete) == 365
    months = {(d.year, d.month) for d in days}
    assert len(months) == 6


def test_a_backup_kept_by_several_rules_is_kept_once() -> None:
    backups = [backup(at("2026-06-30"))]
    plan = plan_prune(backups, RetentionPolicy(), now=NOW)
    assert [reasons for _, reasons in plan.keep] == [("last", "daily", "weekly", "monthly")]
    assert plan.delete == []


def test_the_plan_does_not_depend_on_listing_order() -> None:
    backups = daily_backups("2026-01-01", 90, per_day=2)
    # Two backups in the same second: the name breaks the tie.
    backups.append(B(backups[-1].name[:-1] + "1", backups[-1].created_at))
    expected = plan_prune(backups, RetentionPolicy(), now=NOW)
    shuffled = list(backups)
    random.Random(7).shuffle(shuffled)  # noqa: S311
    again = plan_prune(shuffled, RetentionPolicy(), now=NOW)
    assert [b.name for b, _ in again.keep] == [b.name for b, _ in expected.keep]
    assert {b.name for b in again.delete} == {b.name for b in expected.delete}


def test_newest_is_always_kept_and_nothing_complete_is_lost_twice() -> None:
    """Keep and delete partition the complete backups; the newest complete one is always kept."""
    rng = random.Random(15)  # noqa: S311
    for _ in range(200):
        start = at("2026-01-01")
        backups = [backup(start + dt.timedelta(hours=rng.randrange(0, 24 * 400))) for _ in range(rng.randrange(1, 40))]
        backups = list({b.name: b for b in backups}.values())
        policy = RetentionPolicy(
            keep_last=rng.randrange(1, 5),
            keep_daily=rng.randrange(0, 10),
            keep_weekly=rng.randrange(0, 6),
            keep_monthly=rng.randrange(0, 13),
        )
        plan = plan_prune(backups, policy, now=NOW)
        keep = {b.name for b, _ in plan.keep}
        delete = {b.name for b in plan.delete}
        assert keep.isdisjoint(delete)
        assert keep | delete == {b.name for b in backups}
        assert max(backups, key=lambda b: b.created_at).name in keep
        assert len(keep) <= policy.keep_last + policy.keep_daily + policy.keep_weekly + policy.keep_monthly


def test_incomplete_backups_are_deleted_only_once_old() -> None:
    """A leftover of a killed run goes after an hour; a younger one may still be being written."""
    old = backup(NOW - LEFTOVER_AGE - dt.timedelta(seconds=1), complete=False)
    young = backup(NOW - dt.timedelta(minutes=5), complete=False)
    done = backup(NOW - dt.timedelta(days=1))
    plan = plan_prune([old, young, done], RetentionPolicy(), now=NOW)
    assert plan.leftovers == [old]
    assert plan.delete == [old]
    assert [b for b, _ in plan.keep] == [done]


def test_incomplete_backups_never_count_for_retention() -> None:
    """A newer incomplete backup does not push the last complete one out of keep_last."""
    done = backup(at("2026-06-01"))
    broken = backup(at("2026-06-02"), complete=False)
    plan = plan_prune(
        [done, broken], RetentionPolicy(keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0), now=NOW
    )
    assert [b for b, _ in plan.keep] == [done]


def test_days_are_utc() -> None:
    """23:30 at UTC-5 is the next day in UTC: the buckets follow the backups' (UTC) names."""
    minus5 = dt.timezone(dt.timedelta(hours=-5))
    late = B("late", dt.datetime(2026, 6, 1, 23, 30, tzinfo=minus5))
    next_morning = B("morning", dt.datetime(2026, 6, 2, 6, 0, tzinfo=dt.UTC))
    policy = RetentionPolicy(keep_last=1, keep_daily=2, keep_weekly=0, keep_monthly=0)
    plan = plan_prune([late, next_morning], policy, now=NOW)
    assert [b.name for b, _ in plan.keep] == ["morning"]


@pytest.mark.parametrize("counts", [{"keep_last": 0}, {"keep_daily": -1}, {"keep_weekly": -1}, {"keep_monthly": -1}])
def test_policy_refuses_a_count_that_could_delete_everything(counts: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="keep_last"):
        RetentionPolicy(**counts)
