"""Blocked addresses and networks: refused by the network guard until they expire."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime


class Block(Base):
    __tablename__ = "blocks"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # An address as a network ("203.0.113.7/32", "2001:db8::/64").
    network: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(String(256))
    source: Mapped[str] = mapped_column(String(16))  # manual | auto
    rule: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    created_by: Mapped[str | None] = mapped_column(String(320))
