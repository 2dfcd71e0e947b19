"""Principals remembered between requests, forgotten at the first change that concerns them.

Resolving a credential (token → session → user → roles → permissions) is a
join of four tables on every authenticated request; its answer changes only
when a session is revoked, a user disabled, a role granted, withdrawn or
redefined, or an API key revoked. Each of those changes raises the
``principals`` epoch (``bastion.access.models.Epoch``) through database
triggers, in the same transaction, whoever makes it: this process, another
worker, another instance on the same database, ``bastion`` on the command
line, or an extension's own SQL.

Every request still reads the epoch (one primary-key row), so a change is
seen at the very next request on every process and instance, as before the
cache; a remembered principal is used only while the epoch is the one it
was read under. What can change without the epoch, the session's expiry,
is checked on every use.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from sqlalchemy import select

from bastion.access.models import Epoch
from bastion.access.principal import Principal
from bastion.db.database import Queries

# Enough for every live session of a busy instance; the oldest is dropped first.
CAPACITY = 10_000
_EPOCH = select(Epoch.value).where(Epoch.name == "principals")


@dataclass
class Remembered:
    principal: Principal
    owner: uuid.UUID
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None


class PrincipalCache:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._epoch: int | None = None
        self._entries: OrderedDict[Hashable, Remembered] = OrderedDict()

    async def current_epoch(self, db: Queries) -> int:
        """Read the epoch; when it moved, forget everything remembered under the old one."""
        epoch = int(await db.value(_EPOCH) or 0)
        if epoch != self._epoch:
            self._entries.clear()
            self._epoch = epoch
        return epoch

    def get(self, key: Hashable, epoch: int) -> Remembered | None:
        if epoch != self._epoch:
            return None
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: Hashable, epoch: int, entry: Remembered) -> None:
        """Remember ``entry``, read under ``epoch`` (nothing, if the epoch has moved since)."""
        if epoch != self._epoch:
            return
        self._entries[key] = entry
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
