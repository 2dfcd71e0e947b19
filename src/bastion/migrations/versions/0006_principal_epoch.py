"""The principals epoch, raised by triggers on every change a cached principal depends on.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# (trigger name, table, the events that change what a principal of it holds)
WATCHED = (
    ("epoch_sessions_revoked", "sessions", "UPDATE OF revoked_at"),
    ("epoch_sessions_deleted", "sessions", "DELETE"),
    ("epoch_users_disabled", "users", "UPDATE OF disabled"),
    ("epoch_users_deleted", "users", "DELETE"),
    ("epoch_user_roles_changed", "user_roles", "UPDATE"),
    ("epoch_user_roles_deleted", "user_roles", "DELETE"),
    ("epoch_roles_added", "roles", "INSERT"),
    ("epoch_roles_changed", "roles", "UPDATE"),
    ("epoch_roles_deleted", "roles", "DELETE"),
    ("epoch_api_keys_changed", "api_keys", "UPDATE OF revoked_at, scopes, expires_at"),
    ("epoch_api_keys_deleted", "api_keys", "DELETE"),
)
_RAISE = "UPDATE epochs SET value = value + 1 WHERE name = 'principals'"
# A role granted to someone with no session or key concerns no remembered
# principal (a new account's roles above all: a sign-up flood must not empty
# every cache). A grant can only add permissions, so a principal read while
# the grant commits is at worst missing it, never holding too much.
_HOLDS_CREDENTIALS = (
    "EXISTS (SELECT 1 FROM sessions WHERE user_id = NEW.user_id) "
    "OR EXISTS (SELECT 1 FROM api_keys WHERE user_id = NEW.user_id)"
)


def upgrade() -> None:
    epochs = op.create_table(
        "epochs",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )
    op.bulk_insert(epochs, [{"name": "principals", "value": 0}])
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(
            "CREATE FUNCTION bastion_raise_principals_epoch() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {_RAISE}; RETURN NULL; END $$"
        )
    for name, table, events in WATCHED:
        if postgres:
            op.execute(
                f"CREATE TRIGGER {name} AFTER {events} ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION bastion_raise_principals_epoch()"
            )
        else:
            op.execute(f"CREATE TRIGGER {name} AFTER {events} ON {table} BEGIN {_RAISE}; END")
    if postgres:
        op.execute(
            "CREATE FUNCTION bastion_raise_principals_epoch_on_grant() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN IF {_HOLDS_CREDENTIALS} THEN {_RAISE}; END IF; RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER epoch_user_roles_added AFTER INSERT ON user_roles "
            "FOR EACH ROW EXECUTE FUNCTION bastion_raise_principals_epoch_on_grant()"
        )
    else:
        op.execute(
            f"CREATE TRIGGER epoch_user_roles_added AFTER INSERT ON user_roles WHEN {_HOLDS_CREDENTIALS} "
            f"BEGIN {_RAISE}; END"
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, table, _ in (*WATCHED, ("epoch_user_roles_added", "user_roles", "")):
        op.execute(f"DROP TRIGGER {name} ON {table}" if postgres else f"DROP TRIGGER {name}")
    if postgres:
        op.execute("DROP FUNCTION bastion_raise_principals_epoch_on_grant()")
        op.execute("DROP FUNCTION bastion_raise_principals_epoch()")
    op.drop_table("epochs")
