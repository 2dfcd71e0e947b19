"""How records' ids and times are read for presenting: the same text the
Python values would print, without building them."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

from bastion.data.tables import RecordTime, RecordUuid
from bastion.db.types import UTCDateTime

SQLITE = SQLiteDialect_pysqlite()


def test_a_uuid_read_from_sqlite_is_its_canonical_text() -> None:
    convert = RecordUuid()._cached_result_processor(SQLITE, None)  # as bastion.db reads it
    for value in (uuid.uuid4(), uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)):
        stored = sa.Uuid()._cached_bind_processor(SQLITE)(value)  # type: ignore[misc]  # as bastion.db binds it
        assert convert(stored) == str(value)
    assert convert(None) is None


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC),  # isoformat() leaves out a zero fraction
        dt.datetime(2026, 12, 1, 12, 0, 5, 120, tzinfo=dt.UTC),
        dt.datetime(1999, 1, 2, 3, 4, 5, 999999, tzinfo=dt.timezone(dt.timedelta(hours=-7))),
    ],
)
def test_a_time_read_from_sqlite_is_what_isoformat_in_utc_writes(value: dt.datetime) -> None:
    stored = UTCDateTime()._cached_bind_processor(SQLITE)(value)  # type: ignore[misc]  # as bastion.db binds it
    assert RecordTime()._cached_result_processor(SQLITE, None)(stored)  # type: ignore[misc] == value.astimezone(dt.UTC).isoformat()
