"""Baseline: an empty schema that later migrations build on.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing yet: the identity and data domains add their tables."""


def downgrade() -> None:
    """Nothing to undo."""
