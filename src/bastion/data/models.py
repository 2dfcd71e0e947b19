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


# One data key per user (crypto-shredding): the user's encrypted record fields
# are sealed with it, and it is itself wrapped by the "encryption" keyring.
# Erasure deletes the row, and with it every way to read those fields. The
# foreign key makes a key for an account that is gone impossible: a record
# created while its owner is being erased fails instead of outliving them.
USER_KEYS = sa.Table(
    "user_keys",
    Base.metadata,
    sa.Column("user_id", sa.Uuid, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
