"""Storage: the async engine, the declarative base and column types.

The migrations, which know every domain's tables, are ``bastion.migrations``."""

from bastion.db.engine import Base, DatabaseGone, create_engine, ping
from bastion.db.types import UTCDateTime

__all__ = ["Base", "DatabaseGone", "UTCDateTime", "create_engine", "ping"]
