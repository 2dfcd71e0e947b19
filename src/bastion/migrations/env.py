"""Alembic environment: runs migrations as the database's schema work (``Database.run_sync``).

The target is ``bastion.models``, the registry of every domain's tables, so
``alembic check`` and ``revision --autogenerate`` compare the whole schema.
The collections' record tables (``c_*``) are the data domain's and are left
out of the comparison.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import Any

from alembic import context
from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from bastion.db import open_database
from bastion.models import metadata, owned_by_migrations


def _include_name(name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames) -> bool:
    if type_ == "table":
        return name is None or owned_by_migrations(name)
    return True


# pg_advisory_xact_lock key (any fixed 64-bit number; ours spells "bastion" in ASCII).
MIGRATION_LOCK = 0x62617374696F6E


def _applied(ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]) -> None:
    # bastion.migrations.upgrade logs what ran, in one line, instead of Alembic's INFO chatter.
    context.config.attributes.setdefault("applied", []).append(step.up_revision_id)


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Instances started together on a fresh database would each create the
        # same tables at once (one dies on a duplicate key in pg_type). The
        # first takes this lock; the others wait, then find the schema at head.
        # Held until the migration transaction commits or rolls back.
        connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_name=_include_name,
        render_as_batch=connection.dialect.name == "sqlite",
        on_version_apply=_applied,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    db = open_database(context.config.attributes["url"])
    try:
        await db.run_sync(_run)
    finally:
        await db.close()


asyncio.run(_main())
