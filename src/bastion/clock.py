"""Time, injected: services ask the clock, tests set it."""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class FrozenClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, at: dt.datetime | None = None) -> None:
        self.at = at or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def now(self) -> dt.datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += dt.timedelta(**delta)


def in_utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC, or ValueError (a 422 in a model) when it has no UTC
    form: year 1 at +01:00 or year 9999 at -01:00 would overflow on storage."""
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None
