"""Alembic environment: runs migrations over the async engine."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

# Every domain's models, so Base.metadata describes the whole schema.
from bastion.audit import models as _audit  # noqa: F401
from bastion.db.engine import Base, create_engine
from bastion.identity import models as _identity  # noqa: F401
from bastion.sessions import models as _sessions  # noqa: F401


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    engine = create_engine(context.config.attributes["url"])
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


asyncio.run(_main())
