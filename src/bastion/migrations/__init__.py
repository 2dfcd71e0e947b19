"""Alembic migrations, run by ``bastion migrate`` and ``bastion init``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Passed as an attribute, not an ini option, so a password in the URL is
    # never interpolated into config text or printed by alembic.
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``; blocks until done.

    The migration environment drives the async engine with ``asyncio.run``,
    which cannot nest in a running loop (an embedding app, the tests), so it
    runs on a thread of its own.
    """
    with ThreadPoolExecutor(1) as pool:
        pool.submit(command.upgrade, alembic_config(url), revision).result()
