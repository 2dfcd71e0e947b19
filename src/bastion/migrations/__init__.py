"""Alembic migrations, run by ``bastion migrate`` and ``bastion init``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic import command
from alembic.config import Config

from bastion.logging import get_logger

log = get_logger(__name__)

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
    config = alembic_config(url)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(command.upgrade, config, revision).result()
    # One line when the schema changed, none when it was already current.
    if applied := config.attributes.get("applied"):
        log.info("schema migrated", revisions=applied)
