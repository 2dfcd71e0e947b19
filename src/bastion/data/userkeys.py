"""Each user's data key (crypto-shredding): made on first use, read through a
short cache, destroyed by erasure.

A user's encrypted record fields are sealed with their own data key
(``bastion.security.datakeys``), stored only wrapped by the "encryption"
keyring in ``user_keys``. Deleting that row is what makes the fields
unreadable everywhere, old backups included, once the erasure ledger has
been applied to them.

Reads cache unwrapped keys for ``CACHE_SECONDS``, so a list of records pays
at most one small select and one unwrap per owner, and usually neither. The
cache is filled only from reads outside a write (committed rows), never by
the transaction that creates a key, which could still roll back. Erasing a
user calls :meth:`UserKeys.forget` before and after its commit, and a read
that began before a ``forget`` does not fill the cache (a generation count):
in this process a destroyed key stops working at once. Another process keeps
at most ``CACHE_SECONDS`` of a key whose rows are gone by then.

Writes take the key on the writer, as a change, so they are ordered against
an erasure (see :meth:`UserKeys.for_writing`). Every change of rows that
refer to their owner's account (the key, a record) goes through
:func:`write_owned`, so an owner erased meanwhile is one answer, ``OwnerGone``.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.elements import ClauseElement

from bastion.data.models import USER_KEYS
from bastion.db import MissingReference, Transaction, UTCDateTime
from bastion.db.database import Params, Queries
from bastion.http.problems import Unauthorized
from bastion.security import DataKey, Encryptor, new_wrapped_data_key

# How long an unwrapped key is reused by reads without looking at its row again.
CACHE_SECONDS = 30.0
CACHE_SIZE = 4096

# The users table by name only: data and identity sit on one layer and do not import each other.
_USERS = sa.table("users", sa.column("id", sa.Uuid))
_USER_ID = sa.bindparam("user_id", type_=sa.Uuid())
# A key only for an account that exists (the foreign key also holds it; this makes it a clean refusal).
_NEW_KEY = sa.select(
    _USER_ID, sa.bindparam("wrapped", type_=sa.LargeBinary()), sa.bindparam("created_at", type_=UTCDateTime())
).where(sa.exists().where(_USERS.c.id == _USER_ID))
_CREATE = {
    "postgresql": postgresql_insert(USER_KEYS)
    .from_select(["user_id", "wrapped", "created_at"], _NEW_KEY)
    .on_conflict_do_nothing(),
    "sqlite": sqlite_insert(USER_KEYS)
    .from_select(["user_id", "wrapped", "created_at"], _NEW_KEY)
    .on_conflict_do_nothing(),
}
# FOR SHARE (PostgreSQL; SQLite has one writer anyway): an erasure deleting
# this row waits for the write that uses it, and then deletes its records too.
_LOCKED = sa.select(USER_KEYS.c.wrapped).where(USER_KEYS.c.user_id == _USER_ID).with_for_update(read=True)
_MANY = sa.select(USER_KEYS.c.user_id, USER_KEYS.c.wrapped).where(
    USER_KEYS.c.user_id.in_(sa.bindparam("user_ids", expanding=True))
)
_DELETE = sa.delete(USER_KEYS).where(USER_KEYS.c.user_id == _USER_ID)
_ACCOUNT = sa.select(_USERS.c.id).where(_USERS.c.id == _USER_ID)


class OwnerGone(Unauthorized):
    """The record's owner has no account any more (erased while this request ran): answered
    as if the caller's session were gone, whoever wrote (the owner's session is, with them)."""

    def __init__(self) -> None:
        super().__init__(headers={"WWW-Authenticate": "Bearer"})


async def write_owned(tx: Transaction, statement: ClauseElement, params: Params = None) -> int:
    """``tx.execute`` of a change of rows that refer to their owner's account; OwnerGone if it is gone.

    PostgreSQL: the account existed when the statement began, and the foreign key's
    check then waited for an erasure that deleted it. SQLite: an erasure committed
    between the request's sign-in check and this change. Only the foreign key's
    refusal is mapped (``MissingReference``); any other constraint's error stays the
    driver's. The owner's is the only foreign key of these rows (relations have none),
    so the refusal means nothing else.
    """
    try:
        return await tx.execute(statement, params)
    except MissingReference:
        raise OwnerGone from None


async def owner_exists(db: Queries, user_id: uuid.UUID) -> bool:
    """Whether ``user_id`` still has an account (asked when a write found its record gone)."""
    return await db.value(_ACCOUNT, {"user_id": user_id}) is not None


class UserKeys:
    def __init__(self, encryptor: Encryptor) -> None:
        self._encryptor = encryptor
        self._cache: OrderedDict[uuid.UUID, tuple[float, bytes, DataKey]] = OrderedDict()
        self._generation = 0

    async def for_writing(self, tx: Transaction, user_id: uuid.UUID, now: dt.datetime) -> DataKey:
        """``user_id``'s key, made if they have none; raises OwnerGone if the account is gone.

        The row is read FOR SHARE in the write's transaction: on PostgreSQL an
        erasure's delete of it waits for the write that uses it (and then
        deletes its record too); on SQLite the write's transaction holds the
        writer from its start (BEGIN IMMEDIATE), so an erasure is wholly
        before it or wholly after. Only a user without a key yet pays for
        making one: the insert does nothing when a racing write made it first,
        and refuses an account that is gone.
        """
        stored = await tx.value(_LOCKED, {"user_id": user_id})
        if stored is None:
            wrapped = new_wrapped_data_key(self._encryptor, str(user_id))
            created = {"user_id": user_id, "wrapped": wrapped, "created_at": now}
            await write_owned(tx, _CREATE[tx.dialect.name], created)
            stored = await tx.value(_LOCKED, {"user_id": user_id})
        if stored is None:
            raise OwnerGone
        stored = bytes(stored)
        cached = self._cache.get(user_id)
        if cached is not None and cached[1] == stored:
            return cached[2]
        return DataKey.unwrap(self._encryptor, stored, str(user_id))

    async def for_reading(self, db: Queries, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, DataKey]:
        """The keys of those of ``user_ids`` that have one (a user without a key has no sealed values)."""
        now = time.monotonic()
        found: dict[uuid.UUID, DataKey] = {}
        missing: list[uuid.UUID] = []
        for user_id in set(user_ids):
            cached = self._cache.get(user_id)
            if cached is not None and now - cached[0] < CACHE_SECONDS:
                found[user_id] = cached[2]
            else:
                missing.append(user_id)
        if not missing:
            return found
        generation = self._generation
        rows = await db.all(_MANY, {"user_ids": missing})
        for user_id, wrapped in rows:
            key = DataKey.unwrap(self._encryptor, bytes(wrapped), str(user_id))
            found[user_id] = key
            if generation == self._generation:
                self._remember(user_id, bytes(wrapped), key, now)
        return found

    async def destroy(self, tx: Transaction, user_id: uuid.UUID) -> bool:
        """Delete ``user_id``'s wrapped key (crypto-shredding); whether there was one.

        Call :meth:`forget` again after the transaction commits."""
        self.forget(user_id)
        return await tx.execute(_DELETE, {"user_id": user_id}) > 0

    def forget(self, user_id: uuid.UUID) -> None:
        """Drop ``user_id``'s key from this process's cache, and keep reads under way from caching it."""
        self._generation += 1
        self._cache.pop(user_id, None)

    def _remember(self, user_id: uuid.UUID, wrapped: bytes, key: DataKey, now: float) -> None:
        self._cache[user_id] = (now, wrapped, key)
        self._cache.move_to_end(user_id)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
