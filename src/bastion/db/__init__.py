"""Storage: the async engine, the declarative base and migrations."""

from bastion.db.engine import Base, create_engine, ping
from bastion.db.migrate import upgrade
from bastion.db.types import UTCDateTime

__all__ = ["Base", "UTCDateTime", "create_engine", "ping", "upgrade"]
