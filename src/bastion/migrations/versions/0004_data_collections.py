"""The applied collection definitions (``data_collections``).

Until this revision the data domain created the table itself on first use;
a database where it did so keeps its table and rows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bastion.db.types import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("data_collections"):
        return
    op.create_table(
        "data_collections",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("applied_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("data_collections")
