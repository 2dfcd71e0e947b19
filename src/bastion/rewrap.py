"""Every sealed value, counted per key and moved to the active key, while the server serves.

A sealed value is an AES-GCM blob under the "encryption" keyring
(bastion.security.aead). They live in database columns, each collection's
encrypted fields, ``users.totp_secret`` and the users' wrapped data keys
(``user_keys.wrapped``), and in files, the CA key when there is a CA. A
field of an owned record is sealed with its owner's data key, not with the
keyring (bastion.security.datakeys): rewrapping that user's wrapped key is
what moves it, so such values are neither rewrapped nor counted here.
:func:`sealed_columns` and :func:`sealed_files` list them all, and both
``bastion keys rewrap`` and the counts of ``bastion keys list`` walk that
one list, so a key whose count is 0 protects nothing and can be removed.
(A test fails when a binary column appears that the list does not name.)

Each batch is its own short transaction, and each value is replaced only if
it is still the one that was read (compare-and-set), so a row the server
updates meanwhile keeps the server's newer value. Values already under the
active key are skipped, which makes a run after an interruption resume where
the last one stopped in effect. Reads never wait for this: every key stays in
the keyring, so old and new values decrypt throughout.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

import sqlalchemy as sa

from bastion.data.models import USER_KEYS
from bastion.data.schema import Catalog
from bastion.data.sealing import field_aad
from bastion.data.tables import DEFINITIONS_SELECT, parse_definitions, raw_definitions
from bastion.db import Database, Transaction, open_database, transaction
from bastion.identity.models import User, totp_secret_aad
from bastion.network.ca import SealedKeyFile, sealed_key_file
from bastion.secrets import Keyrings
from bastion.security import Encryptor, InvalidCiphertext, data_key_aad, is_data_key_blob
from bastion.settings import Settings

Report = Callable[[str, int, int], None]  # place, values done, values in all
Rows = list[tuple[Any, bytes]]  # (row id, sealed value)
# The kid counted for a value that is not a blob at all.
CORRUPT = "(corrupt)"


@dataclass(frozen=True)
class SealedColumn:
    """A column of sealed values, and the associated data each is bound to."""

    name: str  # "users.totp_secret", "notes.secret": for progress and errors
    table: sa.Table
    column: str
    aad: Callable[[Any], bytes]  # the row's id -> its value's associated data
    key_column: str = "id"

    @property
    def key(self) -> sa.ColumnElement[Any]:
        return self.table.c[self.key_column]

    # Its statements, built once per column. Parameters: ``limit``, and ``last``
    # (the last id of the previous batch) for ``next_batch``.
    @cached_property
    def count(self) -> sa.Select[Any]:
        return sa.select(sa.func.count()).select_from(self.table).where(self.table.c[self.column].is_not(None))

    @cached_property
    def first_batch(self) -> sa.Select[Any]:
        column = self.table.c[self.column]
        limit = sa.bindparam("limit", type_=sa.Integer())
        return sa.select(self.key, column).where(column.is_not(None)).order_by(self.key).limit(limit)

    @cached_property
    def next_batch(self) -> sa.Select[Any]:
        return self.first_batch.where(self.key > sa.bindparam("last", type_=self.key.type))

    @cached_property
    def replace(self) -> sa.Update:
        """Compare-and-set: the new value only where the row still holds the one read (``_id``, ``_old``, ``_new``)."""
        column = self.table.c[self.column]
        return (
            sa.update(self.table)
            .where(
                self.key == sa.bindparam("_id", type_=self.key.type), column == sa.bindparam("_old", type_=column.type)
            )
            .values({self.column: sa.bindparam("_new", type_=column.type)})
        )


@dataclass
class RewrapResult:
    rewrapped: int = 0
    corrupt: int = 0


def sealed_columns(catalog: Catalog) -> list[SealedColumn]:
    users = User.__table__
    assert isinstance(users, sa.Table)  # noqa: S101 - a declarative model's table
    places = [
        SealedColumn("users.totp_secret", users, "totp_secret", totp_secret_aad),
        SealedColumn("user_keys.wrapped", USER_KEYS, "wrapped", _data_key_aad, key_column="user_id"),
    ]
    for collection in catalog.collections.values():
        for field, kind in collection.fields.items():
            if kind.type == "encrypted":
                aad = partial(field_aad, collection.name, field)
                places.append(SealedColumn(f"{collection.name}.{field}", collection.table, field, aad))
    return places


def _data_key_aad(user_id: Any) -> bytes:
    return data_key_aad(str(user_id))


def sealed_files(settings: Settings) -> list[SealedKeyFile]:
    ca_key = sealed_key_file(settings)
    return [] if ca_key is None else [ca_key]


async def rewrap_all(settings: Settings, rings: Keyrings, *, batch_size: int, report: Report) -> RewrapResult:
    db = open_database(settings.sqlalchemy_url)
    try:
        return await rewrap_database(db, rings, batch_size=batch_size, report=report, files=sealed_files(settings))
    finally:
        await db.close()


async def count_all(settings: Settings, rings: Keyrings) -> Counter[str]:
    """How many sealed values each kid protects (``CORRUPT`` for values with no readable kid)."""
    db = open_database(settings.sqlalchemy_url)
    try:
        return await count_database(db, rings, files=sealed_files(settings))
    finally:
        await db.close()


async def rewrap_database(
    db: Database,
    rings: Keyrings,
    *,
    batch_size: int,
    report: Report,
    files: Sequence[SealedKeyFile] = (),
) -> RewrapResult:
    encryptor, active = Encryptor(rings.encryption), rings.encryption.active_kid
    result = RewrapResult()
    for place in await _columns(db):

        async def rewrap_batch(tx: Transaction, rows: Rows, place: SealedColumn = place) -> None:
            for row_id, blob in rows:
                new = _rewrapped(encryptor, active, blob, place.aad(row_id), result)
                if new is not None:
                    result.rewrapped += await tx.execute(place.replace, {"_id": row_id, "_old": blob, "_new": new})

        await _walk(db, place, batch_size, report, rewrap_batch)
    for file in files:
        new = _rewrapped(encryptor, active, file.read(), file.aad, result)
        if new is not None:
            file.replace(new)
            result.rewrapped += 1
    return result


async def count_database(
    db: Database,
    rings: Keyrings,
    *,
    files: Sequence[SealedKeyFile] = (),
) -> Counter[str]:
    encryptor, counts = Encryptor(rings.encryption), Counter[str]()

    async def count_batch(_: Transaction, rows: Rows) -> None:
        counts.update(_kid(encryptor, blob) for _, blob in rows if not is_data_key_blob(blob))

    for place in await _columns(db):
        await _walk(db, place, 1000, lambda *_: None, count_batch)
    counts.update(_kid(encryptor, file.read()) for file in files)
    return counts


async def _columns(db: Database) -> list[SealedColumn]:
    return sealed_columns(Catalog.build(parse_definitions(raw_definitions(await db.all(DEFINITIONS_SELECT)))))


async def _walk(
    db: Database,
    place: SealedColumn,
    batch_size: int,
    report: Report,
    visit: Callable[[Transaction, Rows], Awaitable[None]],
) -> None:
    """``visit`` the non-null values of ``place`` in id order, a batch per transaction."""
    total = int(await db.value(place.count) or 0)
    done, last = 0, None
    report(place.name, done, total)
    while True:
        async with transaction(db) as tx:
            if last is None:
                found = await tx.all(place.first_batch, {"limit": batch_size})
            else:
                found = await tx.all(place.next_batch, {"limit": batch_size, "last": last})
            rows: Rows = [(row_id, blob) for row_id, blob in found]
            await visit(tx, rows)
        if not rows:
            return
        last = rows[-1][0]
        done += len(rows)
        report(place.name, min(done, max(total, done)), max(total, done))


def _rewrapped(encryptor: Encryptor, active: str, blob: bytes, aad: bytes, result: RewrapResult) -> bytes | None:
    """``blob`` under the active key, or None if it already is or fails its integrity check."""
    if is_data_key_blob(blob):
        return None  # under its owner's data key: moved with user_keys.wrapped
    try:
        return None if encryptor.key_id(blob) == active else encryptor.rewrap(blob, aad)
    except InvalidCiphertext:
        result.corrupt += 1
        return None


def _kid(encryptor: Encryptor, blob: bytes) -> str:
    try:
        return encryptor.key_id(blob)
    except InvalidCiphertext:
        return CORRUPT
