"""Moving encrypted fields to the active key after a rotation, while the server serves.

Each batch is its own short transaction, and each value is replaced only if
it is still the one that was read (compare-and-set), so a record the server
updates meanwhile keeps the server's newer value. Values already under the
active key are skipped, which makes a run after an interruption resume where
the last one stopped in effect. Reads never wait for this: every key stays in
the keyring, so old and new values decrypt throughout.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bastion.data.schema import Catalog, Collection
from bastion.data.sealing import FieldSealer
from bastion.data.tables import read_definitions
from bastion.db import create_engine
from bastion.secrets import Keyrings
from bastion.security import BlindIndex, Encryptor, InvalidCiphertext
from bastion.settings import Settings

Report = Callable[[str, int, int], None]  # collection, records done, records in all


@dataclass
class RewrapResult:
    rewrapped: int = 0
    corrupt: int = 0


async def rewrap_all(settings: Settings, rings: Keyrings, *, batch_size: int, report: Report) -> RewrapResult:
    engine = create_engine(settings.sqlalchemy_url)
    try:
        return await rewrap_engine(engine, rings, batch_size=batch_size, report=report)
    finally:
        await engine.dispose()


async def rewrap_engine(engine: AsyncEngine, rings: Keyrings, *, batch_size: int, report: Report) -> RewrapResult:
    async with engine.begin() as connection:
        catalog = Catalog.build(await connection.run_sync(read_definitions))
    sealer = FieldSealer(Encryptor(rings.encryption), BlindIndex(rings.hmac))
    result = RewrapResult()
    for collection in catalog.collections.values():
        fields = [name for name, kind in collection.fields.items() if kind.type == "encrypted"]
        if fields:
            await _rewrap_collection(engine, collection, fields, sealer, rings.encryption.active_kid, batch_size,
                                     result, report)  # fmt: skip
    return result


async def _rewrap_collection(  # noqa: PLR0917 - private; one call site
    engine: AsyncEngine,
    collection: Collection,
    fields: list[str],
    sealer: FieldSealer,
    active_kid: str,
    batch_size: int,
    result: RewrapResult,
    report: Report,
) -> None:
    table = collection.table
    async with engine.connect() as connection:
        total = int(await connection.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
    done, last = 0, None
    report(collection.name, done, total)
    while True:
        async with engine.begin() as connection:
            query = sa.select(table.c.id, *(table.c[f] for f in fields)).order_by(table.c.id).limit(batch_size)
            if last is not None:
                query = query.where(table.c.id > last)
            rows = (await connection.execute(query)).all()
            for record_id, *blobs in rows:
                for field, blob in zip(fields, blobs, strict=True):
                    result.rewrapped += await _rewrap_value(connection, collection, field, record_id, blob, sealer,
                                                            active_kid, result)  # fmt: skip
        if not rows:
            return
        last = rows[-1][0]
        done += len(rows)
        report(collection.name, min(done, max(total, done)), max(total, done))


async def _rewrap_value(  # noqa: PLR0917 - private; one call site
    connection: AsyncConnection,
    collection: Collection,
    field: str,
    record_id: uuid.UUID,
    blob: bytes | None,
    sealer: FieldSealer,
    active_kid: str,
    result: RewrapResult,
) -> int:
    if blob is None:
        return 0
    try:
        if sealer.key_id(blob) == active_kid:
            return 0
        new = sealer.rewrap(collection.name, field, record_id, blob)
    except InvalidCiphertext:
        result.corrupt += 1
        return 0
    column = collection.table.c[field]
    updated = await connection.execute(
        sa.update(collection.table).where(collection.table.c.id == record_id, column == blob).values({field: new})
    )
    return int(updated.rowcount)
