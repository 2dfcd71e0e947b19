"""Migrations run by several instances at once (issue 11, item 12)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine as create_engine

INSTANCES = 4


# Each instance imports first, then waits for the same moment to migrate.
MIGRATE_AT = """
import sys, time
from bastion.migrations import upgrade
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
upgrade(sys.argv[1])
"""


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_instances_starting_together_on_a_fresh_postgresql_migrate_once(database_url: str) -> None:
    """Separate processes, as instances are (alembic's context is per process). Without the
    advisory lock one of them died on a duplicate key in pg_type."""
    at = str(time.time() + 5)
    instances = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_AT, database_url, at], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(INSTANCES)
    ]
    outputs = [instance.communicate(timeout=120)[0].decode() for instance in instances]
    for instance, output in zip(instances, outputs, strict=True):
        assert instance.returncode == 0, output

    async def revisions() -> list[str]:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                result = await connection.execute(sa.text("SELECT version_num FROM alembic_version"))  # noqa: TID251
                return [row[0] for row in result]
        finally:
            await engine.dispose()

    assert len(asyncio.run(revisions())) == 1
