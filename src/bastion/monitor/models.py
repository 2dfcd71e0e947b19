"""Alerts, their deliveries, and the devices each account has signed in from."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, Uuid, column
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime


class Alert(Base):
    """One incident of one rule for one group (an address, an account, …):
    every event in the same window counts into the same row."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_open", "rule", "group_key", "status"),
        # At most one open alert per rule and group, however many processes record at once.
        Index(
            "ux_alerts_open",
            "rule",
            "group_key",
            unique=True,
            sqlite_where=column("status") == "open",
            postgresql_where=column("status") == "open",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    rule: Mapped[str] = mapped_column(String(64), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    # What the rule counted by, e.g. "address:203.0.113.7" or "global" (never a secret).
    group_key: Mapped[str] = mapped_column(String(160))
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | acknowledged | superseded
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    count: Mapped[int] = mapped_column(Integer, default=1)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(320))


class AlertDelivery(Base):
    """One alert to one destination (a webhook URL, a mail address): retried
    with backoff, and kept as a dead letter when every attempt failed."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (Index("ix_alert_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    alert_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # webhook | mail
    target: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class KnownDevice(Base):
    """An address network and user agent an account has signed in from (keyed hash; no raw address)."""

    __tablename__ = "known_devices"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(128), primary_key=True)
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime)
