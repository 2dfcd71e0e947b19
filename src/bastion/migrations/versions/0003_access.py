"""Roles and API keys.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bastion.db.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    roles = op.create_table(
        "roles",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("permissions", sa.JSON, nullable=False),
        sa.Column("description", sa.String(200), nullable=False, server_default=""),
    )
    op.bulk_insert(
        roles,
        [
            {"name": "admin", "permissions": ["*"], "description": "Everything, with two-factor sign-in"},
            {"name": "user", "permissions": ["me:api-keys", "records:*"], "description": "A signed-up user"},
        ],
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.Uuid, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime),
        sa.Column("last_used_at", UTCDateTime),
        sa.Column("revoked_at", UTCDateTime),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("roles")
