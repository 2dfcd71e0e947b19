"""OAuth client secrets expire: ``oauth_clients.secret_expires_at``.

A client secret now stops authenticating ``oauth.client_secret_lifetime``
after it was issued. The secrets already registered get a year from the
upgrade (the setting's default; the migration reads no settings): none
stops working the day of the upgrade, and each owner is reminded
``rotation.remind_before`` ahead like any other. Clients without a secret
(public, ``private_key_jwt``) keep NULL.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

from bastion.db.types import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# What a secret registered before this revision is given, from the upgrade.
EXISTING_SECRETS_LIFETIME = dt.timedelta(days=365)


def upgrade() -> None:
    op.add_column("oauth_clients", sa.Column("secret_expires_at", UTCDateTime(timezone=True), nullable=True))
    clients = sa.table(
        "oauth_clients",
        sa.column("secret_hash", sa.String()),
        sa.column("secret_expires_at", UTCDateTime(timezone=True)),
    )
    op.execute(
        clients.update()
        .where(clients.c.secret_hash.is_not(None))
        .values(secret_expires_at=dt.datetime.now(dt.UTC) + EXISTING_SECRETS_LIFETIME)
    )


def downgrade() -> None:
    with op.batch_alter_table("oauth_clients", schema=None) as batch_op:
        batch_op.drop_column("secret_expires_at")
