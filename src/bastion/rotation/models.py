"""What the rotation job has already told owners, so each reminder is sent once."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from bastion.db import Base, UTCDateTime


class RotationNotice(Base):
    __tablename__ = "rotation_notices"

    # "api_key" | "oauth_client_secret" (and whatever else gets a reminder).
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    object_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The expiry the notice was about: a renewed credential gets a new notice.
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, primary_key=True)
    sent_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
