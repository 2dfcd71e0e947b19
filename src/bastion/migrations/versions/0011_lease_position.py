"""Leases remember how far their holder got: ``leases.position``.

The detection tail (lease ``monitor-tail``) notes the last audit event it
judged; a process that takes the lease over resumes from there instead of
from the newest event, so events committed while no process held the lease
are judged too. NULL: nothing noted (every lease but the tail's).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("leases", sa.Column("position", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.drop_column("position")
