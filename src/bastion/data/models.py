"""The data domain's own table: the collection definitions it has applied.

The collections' record tables (``c_<name>``) are not here: they follow the
definitions, built by ``tables.build_table`` and changed by ``tables.plan``,
so the migrations leave them to the data domain (``is_collection_table``).
"""

from __future__ import annotations

import sqlalchemy as sa

from bastion.db import Base, UTCDateTime

# One JSON definition per collection, so a plan compares definitions rather
# than guessing types back from each database's catalog.
DEFINITIONS = sa.Table(
    "data_collections",
    Base.metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    # "config" (bastion.toml) or "api" (the admin API).
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("definition", sa.JSON, nullable=False),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)

COLLECTION_TABLE_PREFIX = "c_"


def is_collection_table(name: str) -> bool:
    """Whether ``name`` is a collection's record table (owned by the data domain, not the migrations)."""
    return name.startswith(COLLECTION_TABLE_PREFIX)
