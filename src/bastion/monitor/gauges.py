"""What ``/metrics`` reads of the alerts at scrape time: how many are open (one indexed count)."""

from __future__ import annotations

import sqlalchemy as sa

from bastion.db import Database
from bastion.monitor.models import Alert


async def open_alerts(db: Database) -> int:
    """Alerts not yet acknowledged."""
    count = await db.value(sa.select(sa.func.count()).select_from(Alert).where(Alert.status == "open"))
    return int(count or 0)
