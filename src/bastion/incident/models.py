"""The incident state every instance reads: lockdown on or off, and why."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime


class IncidentState(Base):
    __tablename__ = "incident_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)  # "lockdown"
    on: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(String(512))
    since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    by: Mapped[str | None] = mapped_column(String(320))
