"""Alembic migrations, run by ``bastion migrate`` and ``bastion init``."""

from __future__ import annotations

import re
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.logging import get_logger

if TYPE_CHECKING:
    from alembic.config import Config

log = get_logger(__name__)

MIGRATIONS = Path(__file__).parent


def alembic_config(url: str) -> Config:
    # Alembic is imported here, not with the package: `bastion serve` on an
    # up-to-date schema never needs it (is_current).
    from alembic.config import Config

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
    from alembic import command

    config = alembic_config(url)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(command.upgrade, config, revision).result()
    # One line when the schema changed, none when it was already current.
    if applied := config.attributes.get("applied"):
        log.info("schema migrated", revisions=applied)


_REVISION = re.compile(r"^revision = \"([^\"]+)\"$", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision = (?:None|\"([^\"]+)\")$", re.MULTILINE)


def head_revision() -> str | None:
    """The newest revision in ``versions/``, read from the files; None unless they form one chain.

    What Alembic's script directory says, without importing Alembic (~0.3 s
    and ~10 MiB); anything this simple reading cannot vouch for is None, and
    the caller then runs ``upgrade``.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        text = script.read_text(encoding="utf-8")
        revision, down = _REVISION.findall(text), _DOWN_REVISION.search(text)
        if len(revision) != 1 or down is None:
            return None
        revisions.add(revision[0])
        if down.group(1):
            parents.add(down.group(1))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def known_revisions() -> set[str]:
    """Every revision in ``versions/``: a backup whose schema is not among them is from a newer Bastion."""
    found: set[str] = set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        found.update(_REVISION.findall(script.read_text(encoding="utf-8")))
    return found


def is_current(url: str) -> bool:
    """Whether the SQLite database at ``url`` is at the head revision already (read-only; False when unsure).

    ``bastion serve`` asks before every start, so that a migrated data
    directory starts without Alembic. PostgreSQL always goes through
    ``upgrade`` (its advisory lock orders instances starting at once).
    """
    prefix = next((p for p in ("sqlite+aiosqlite:///", "sqlite:///") if url.startswith(p)), None)
    if prefix is None or "?" in url:
        return False
    path = Path(url.removeprefix(prefix))
    head = head_revision()
    if head is None or not path.is_file():
        return False
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as database:
            rows = database.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return False
    return rows == [(head,)]
