"""Storage: the database every request goes through, the declarative base, column types.

``open_database(url)`` gives the ``Database`` (``bastion.db.database``) of a
URL: SQLite on ``sqlite3`` or PostgreSQL on asyncpg. The migrations, which
know every domain's tables, are ``bastion.migrations``."""

from bastion.db.base import Base
from bastion.db.database import (
    Database,
    DatabaseGone,
    DatabaseUnavailable,
    MissingReference,
    QueryBudgetExceeded,
    Transaction,
    transaction,
)
from bastion.db.types import UTCDateTime


def open_database(url: str) -> Database:
    """The database of a SQLAlchemy-style URL (``sqlite+aiosqlite:///…``, ``postgresql+asyncpg://…``)."""
    if url.startswith("sqlite"):
        from bastion.db.sqlite import SqliteDatabase

        return SqliteDatabase(url)
    from bastion.db.postgres import PostgresDatabase

    return PostgresDatabase(url)


__all__ = [
    "Base",
    "Database",
    "DatabaseGone",
    "DatabaseUnavailable",
    "MissingReference",
    "QueryBudgetExceeded",
    "Transaction",
    "UTCDateTime",
    "open_database",
    "transaction",
]
