"""The alert store: one row per incident, not one per event.

``AlertStore.record(tx, fired)`` counts a firing into the open alert of the
same rule and group whose ``last_seen`` is within the rule's window (the
incident goes on), or opens a new one (a new incident) and writes its
``monitor:alert`` audit event in the same transaction. Only a new alert is
delivered (``Dispatcher``) and acted on (``Responder``): an attack that goes
on for an hour is one alert whose count grows, not a page per request.

An acknowledged alert is closed: the same rule and group firing again after
the acknowledgement opens a new incident. So is an open alert whose group was
quiet for a whole window when the group fires again (status "superseded"):
at most one alert of a rule and group is open at any time.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bastion.audit import EventTag, Origin, record_event
from bastion.clock import Clock
from bastion.db import Database, Transaction
from bastion.monitor.models import Alert
from bastion.monitor.signals import Fired

__all__ = [
    "AlertInfo",
    "AlertStore",
    "BadCursor",
    "Dispatcher",
    "Responder",
]

MONITOR_ORIGIN = Origin(ip=None, request_id="monitor", user_agent="bastion-monitor")


@dataclass(frozen=True)
class AlertInfo:
    """An alert as the API, the command line and delivery see it (no secret in it)."""

    id: uuid.UUID
    rule: str
    severity: str
    group_key: str
    status: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    count: int
    details: dict[str, Any]
    acknowledged_at: dt.datetime | None = None
    acknowledged_by: str | None = None

    @classmethod
    def of(cls, row: Any) -> AlertInfo:
        return cls(
            id=row.id,
            rule=row.rule,
            severity=row.severity,
            group_key=row.group_key,
            status=row.status,
            first_seen=row.first_seen,
            last_seen=row.last_seen,
            count=row.count,
            details=dict(row.details or {}),
            acknowledged_at=row.acknowledged_at,
            acknowledged_by=row.acknowledged_by,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "rule": self.rule,
            "severity": self.severity,
            "group": self.group_key,
            "status": self.status,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "count": self.count,
            "details": self.details,
            "acknowledged_at": self.acknowledged_at.isoformat() if self.acknowledged_at else None,
            "acknowledged_by": self.acknowledged_by,
        }


class Dispatcher(Protocol):
    """Delivers a new alert (webhooks, mail): ``bastion.monitor.delivery``.

    ``enqueue`` runs inside the transaction that stores the alert, so a
    delivery is queued if and only if the alert exists.
    """

    async def enqueue(self, tx: Transaction, alert: AlertInfo) -> None: ...


class Responder(Protocol):
    """Runs a rule's automatic responses (block, step-up, …): ``bastion.monitor.actions``.

    Called after the alert is committed, so a response that fails never loses
    the alert; each action writes its own audit event.
    """

    async def act(self, fired: Fired) -> object: ...


class BadCursor(ValueError):
    """A page cursor this store did not make."""


_COLUMNS = (
    Alert.id,
    Alert.rule,
    Alert.severity,
    Alert.group_key,
    Alert.status,
    Alert.first_seen,
    Alert.last_seen,
    Alert.count,
    Alert.details,
    Alert.acknowledged_at,
    Alert.acknowledged_by,
)
MAX_PAGE = 200
# An open alert whose group was quiet for a whole window, closed when the group fires again.
SUPERSEDED = "superseded"
# INSERT … ON CONFLICT DO NOTHING RETURNING: of racing openers one gets the row back.
_OPEN = {
    "postgresql": postgresql_insert(Alert).on_conflict_do_nothing().returning(Alert.id),
    "sqlite": sqlite_insert(Alert).on_conflict_do_nothing().returning(Alert.id),
}


def _details(fired: Fired) -> dict[str, Any]:
    """What the alert keeps of the firing signal: where from, never a credential."""
    signal = fired.signal
    details: dict[str, Any] = {"window_seconds": fired.window_seconds, "actions": list(fired.actions)}
    if signal.address:
        details["address"] = signal.address
    if signal.account_id:
        details["account_id"] = str(signal.account_id)
    if signal.event_id is not None:
        details["event_id"] = signal.event_id
    return details


class AlertStore:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    async def record(self, tx: Transaction, fired: Fired) -> tuple[AlertInfo, bool]:
        """Count ``fired`` into its open incident, or open one; (the alert, whether it is new).

        At most one alert of a rule and group is open, whatever the number of
        processes recording at once: the partial unique index
        ``ux_alerts_open`` (rule, group_key WHERE status = 'open') refuses a
        second, and the INSERT that opens one does nothing when it would be
        that second. Of racing transactions exactly one inserts, and only it
        gets ``new`` (so only it delivers and responds); the others count
        into the row it opened. The counting is one UPDATE (SQL adds), and
        it is the transaction's first statement: on SQLite it takes the
        writer, so what follows reads under the write lock, not a snapshot.
        """
        group = fired.group_key[:160]
        since = fired.last_seen - dt.timedelta(seconds=fired.window_seconds)
        mine = (Alert.rule == fired.rule, Alert.group_key == group, Alert.status == "open")
        for _ in range(3):
            row = await tx.changed(
                sa.update(Alert)
                .where(*mine, Alert.last_seen >= since)
                .values(
                    count=Alert.count + fired.count,
                    last_seen=sa.case((Alert.last_seen < fired.last_seen, fired.last_seen), else_=Alert.last_seen),
                )
                .returning(*_COLUMNS)
            )
            if row is not None:
                return AlertInfo.of(row), False
            # Quiet for a whole window: that incident is over, a new one starts.
            await tx.execute(sa.update(Alert).where(*mine, Alert.last_seen < since).values(status=SUPERSEDED))
            alert_id = uuid.uuid4()
            values = {
                "id": alert_id,
                "rule": fired.rule,
                "severity": fired.severity,
                "group_key": group,
                "status": "open",
                "first_seen": fired.first_seen,
                "last_seen": fired.last_seen,
                "count": fired.count,
                "details": _details(fired),
            }
            if await tx.changed(_OPEN[tx.dialect.name].values(**values)) is None:
                continue  # another transaction opened it first: count into that one
            record_event(
                tx,
                self.clock,
                EventTag.ALERT_RAISED,
                origin=MONITOR_ORIGIN,
                details={"alert_id": str(alert_id), "rule": fired.rule, "severity": fired.severity},
            )
            return AlertInfo(**values, acknowledged_at=None, acknowledged_by=None), True  # type: ignore[arg-type]
        # Opened and closed (acknowledged) by others between each of our statements, three times.
        raise RuntimeError(f"alert {fired.rule} {group}: no open alert to count into")

    async def get(self, db: Database | Transaction, alert_id: uuid.UUID) -> AlertInfo | None:
        row = await db.one(sa.select(*_COLUMNS).where(Alert.id == alert_id))
        return None if row is None else AlertInfo.of(row)

    async def page(
        self,
        db: Database | Transaction,
        *,
        status: str | None = None,
        rule: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[AlertInfo], str | None]:
        """Newest first; (a page, the cursor of the next page or None)."""
        query = sa.select(*_COLUMNS)
        if status is not None:
            query = query.where(Alert.status == status)
        if rule is not None:
            query = query.where(Alert.rule == rule)
        if cursor is not None:
            first_seen, alert_id = _decode(cursor)
            query = query.where(
                sa.or_(
                    Alert.first_seen < first_seen,
                    sa.and_(Alert.first_seen == first_seen, Alert.id < alert_id),
                )
            )
        limit = max(1, min(limit, MAX_PAGE))
        rows = await db.all(query.order_by(Alert.first_seen.desc(), Alert.id.desc()).limit(limit + 1))
        alerts = [AlertInfo.of(row) for row in rows[:limit]]
        more = len(rows) > limit
        return alerts, _encode(alerts[-1]) if more and alerts else None

    async def acknowledge(self, tx: Transaction, alert_id: uuid.UUID, *, by: str, origin: Origin) -> AlertInfo | None:
        """Close the alert (audited); None when there is no such alert.

        Acknowledging twice, or a superseded alert, changes nothing."""
        alert = await self.get(tx, alert_id)
        if alert is None or alert.status != "open":
            return alert
        now = self.clock.now()
        claimed = await tx.execute(
            sa.update(Alert)
            .where(Alert.id == alert_id, Alert.status == "open")
            .values(status="acknowledged", acknowledged_at=now, acknowledged_by=by[:320])
        )
        if claimed:
            record_event(
                tx,
                self.clock,
                EventTag.ALERT_ACK,
                origin=origin,
                details={"alert_id": str(alert_id), "rule": alert.rule, "by": by[:320]},
            )
        return await self.get(tx, alert_id)


def _encode(alert: AlertInfo) -> str:
    raw = orjson.dumps([alert.first_seen.isoformat(), str(alert.id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        first_seen, alert_id = orjson.loads(raw)
        at = dt.datetime.fromisoformat(first_seen)
        if at.tzinfo is None:
            raise ValueError("naive time")
        return at, uuid.UUID(alert_id)
    except (ValueError, TypeError, orjson.JSONDecodeError) as bad:
        raise BadCursor("not a cursor of this list") from bad
