"""Storage: the async engine, the declarative base and migrations."""

from bastion.db.engine import Base, create_engine, ping
from bastion.db.migrate import upgrade

__all__ = ["Base", "create_engine", "ping", "upgrade"]
