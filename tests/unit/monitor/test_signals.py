"""What the HTTP observer and the tail turn into signals, and the memory counters' windows and caps."""

from __future__ import annotations

import datetime as dt
import types
import uuid
from typing import Any

from bastion.access.principal import Principal
from bastion.clock import FrozenClock
from bastion.monitor.counters import MemoryCounters
from bastion.monitor.service import QUEUE_LIMIT, MonitorService
from bastion.monitor.tail import signal_of
from bastion.settings import Settings


def service(tmp_path: Any) -> MonitorService:
    settings = Settings(data_dir=tmp_path)
    monitor = MonitorService(settings, FrozenClock(), db=None, counters=MemoryCounters())  # type: ignore[arg-type]
    monitor.listening = True
    return monitor


def scope(path: str = "/api/v1/me", *, authorization: str | None = None, principal: Any = None) -> dict[str, Any]:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    return {"path": path, "client": ("192.0.2.5", 1234), "headers": headers, "state": {"principal": principal}}


def test_observer_ignores_ordinary_answers(tmp_path: Any) -> None:
    monitor = service(tmp_path)
    for status in (200, 201, 204, 301, 400, 405, 409, 422, 429):
        monitor.observe(scope(), status, 0.01)
    monitor.observe(scope("/api/v1/other/thing"), 404, 0.01)
    monitor.observe(scope(authorization="Bearer eyJhbGciOi.x.y"), 401, 0.01)
    assert not monitor._queue


def test_observer_signals(tmp_path: Any) -> None:
    monitor = service(tmp_path)
    user = uuid.uuid4()
    principal = Principal(user_id=user, roles=frozenset(), permissions=frozenset(), mfa=False)
    monitor.observe(scope(), 503, 0.01)
    monitor.observe(scope("/api/v1/collections/notes/records/x", principal=principal), 404, 0.01)
    monitor.observe(scope("/api/v1/collections/notes/records/x"), 403, 0.01)
    monitor.observe(scope(authorization="Bearer bsk_00c0ffee00c0ffee_the-secret_part"), 401, 0.01)
    # Not an id Bastion issues: the 401 is not counted by key.
    monitor.observe(scope(authorization="Bearer bsk_AbC-d_the-secret_part"), 401, 0.01)
    tags = [(s.tag, s.principal, s.api_key, s.address) for s in monitor._queue]
    assert tags == [
        ("http:5xx", None, None, "192.0.2.5"),
        ("http:records_denied", f"user:{user}", None, "192.0.2.5"),
        ("http:records_denied", "address:192.0.2.5", None, "192.0.2.5"),
        ("http:api_key_401", None, "00c0ffee00c0ffee", "192.0.2.5"),
    ]
    assert "secret" not in repr(list(monitor._queue))


def test_observer_queue_is_bounded_and_never_raises(tmp_path: Any) -> None:
    monitor = service(tmp_path)
    for _ in range(QUEUE_LIMIT + 50):
        monitor.observe(scope(), 500, 0.0)
    assert len(monitor._queue) == QUEUE_LIMIT
    assert monitor.dropped == 50
    monitor.observe({"path": None, "headers": "garbage"}, 401, 0.0)  # malformed: ignored, no exception


def test_signal_of_an_event_row() -> None:
    actor, subject = uuid.uuid4(), uuid.uuid4()
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    row = types.SimpleNamespace(id=7, at=at, tag="auth:login", outcome="failure", actor_id=None, subject_id=subject)
    row.ip, row.details = "192.0.2.1", {"login": "0123456789abcdef"}
    signal = signal_of(row)
    assert (signal.account_id, signal.login, signal.address, signal.event_id) == (
        subject,
        "0123456789abcdef",
        "192.0.2.1",
        7,
    )
    ok = types.SimpleNamespace(
        id=8,
        at=at,
        tag="auth:login",
        outcome="success",
        actor_id=actor,
        subject_id=actor,
        ip=None,
        details={"mfa": True},
    )
    assert signal_of(ok, admins=frozenset({actor})).details["admin"] is True
    assert "admin" not in signal_of(ok).details
    # A login that is not a string (a forged details payload) is not counted as one.
    odd = types.SimpleNamespace(**{**vars(row), "details": {"login": ["x"]}})
    assert signal_of(odd).login is None


async def test_memory_counters_windows_and_caps() -> None:
    counters = MemoryCounters(max_keys=3)
    assert [await counters.hit("a", t, 10, 5) for t in (0, 1, 2)] == [1, 2, 3]
    assert await counters.hit("a", 11.5, 10, 5) == 2  # 0 and 1 left the window
    assert [await counters.hit("b", t, 100, 3) for t in range(6)] == [1, 2, 3, 3, 3, 3]  # capped
    assert [await counters.distinct("d", m, t, 10, 10) for t, m in enumerate("xyxz")] == [1, 2, 2, 3]
    assert await counters.distinct("d", "w", 12.5, 10, 10) == 2  # x (last seen at 2) and y left; z and w
    assert await counters.add("t", 0, 30) == 1
    assert await counters.add("t", 15, 30, 4) == 5
    assert await counters.total("t", 40, 30) == 4
    assert await counters.claim("c", 0, 5) is True
    assert await counters.claim("c", 4, 5) is False
    assert await counters.claim("c", 5.5, 5) is True
    for n in range(10):
        await counters.hit(f"k{n}", 0, 10, 5)
    assert len(counters._hits) == 3
