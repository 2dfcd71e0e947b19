"""Monitoring and response: the audit tree and its checkpoints, alerts and
their deliveries, known devices, blocks, the incident state, leases, and the
sign-in hardening flags of users.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bastion.db.types import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("group_key", sa.String(length=160), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("first_seen", UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen", UTCDateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("acknowledged_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=320), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alerts_first_seen"), ["first_seen"], unique=False)
        batch_op.create_index("ix_alerts_open", ["rule", "group_key", "status"], unique=False)
        batch_op.create_index(batch_op.f("ix_alerts_rule"), ["rule"], unique=False)
        batch_op.create_index(
            "ux_alerts_open",
            ["rule", "group_key"],
            unique=True,
            sqlite_where=sa.column("status") == "open",
            postgresql_where=sa.column("status") == "open",
        )

    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_checkpoints_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_checkpoints_size"), ["size"], unique=False)

    op.create_table(
        "audit_tree",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("frontier", sa.LargeBinary(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "blocks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("network", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=320), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("blocks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_blocks_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_blocks_network"), ["network"], unique=False)

    op.create_table(
        "incident_state",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("on", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=512), nullable=True),
        sa.Column("since", UTCDateTime(timezone=True), nullable=True),
        sa.Column("by", sa.String(length=320), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=2048), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alert_deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_deliveries_alert_id"), ["alert_id"], unique=False)
        batch_op.create_index("ix_alert_deliveries_due", ["status", "next_attempt_at"], unique=False)

    op.create_table(
        "known_devices",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("fingerprint", sa.String(length=128), nullable=False),
        sa.Column("first_seen", UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "fingerprint"),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=True))
        batch_op.add_column(sa.Column("personal_salt", sa.LargeBinary(length=32), nullable=True))
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("seal", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("redacted_at", UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("purged_at", UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_audit_events_seq"), ["seq"], unique=True)
    _drop_append_only()
    _backfill_leaves()
    _guard_audit_events()

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("step_up_until", UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("password_reset_required", sa.Boolean(), server_default=sa.false(), nullable=False)
        )

    tree = sa.table("audit_tree", sa.column("name"), sa.column("size"), sa.column("frontier", sa.LargeBinary))
    op.bulk_insert(tree, [{"name": "main", "size": 0, "frontier": b""}])
    state = sa.table("incident_state", sa.column("name"), sa.column("on", sa.Boolean))
    op.bulk_insert(state, [{"name": "lockdown", "on": False}])


# What may still change in an audit row once written (0002 refused every
# UPDATE): the sequencer gives seq and seal once; redaction erases the
# personal fields once; a purge erases the content once. Never the id, the
# time or the leaf hash; never a DELETE. Someone holding the database can
# drop these triggers, which is what the tree and its shipped checkpoints
# are for; the triggers stop the application itself from rewriting history.
_UNCHANGED = (
    *("tag", "outcome", "request_id", "ip", "actor_id", "subject_id"),
    *("personal_salt", "redacted_at", "purged_at"),
)
_REFUSED = "audit_events is append-only"


def _drop_append_only() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
        return
    op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")


def _guard_audit_events() -> None:
    if op.get_bind().dialect.name == "sqlite":
        same = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in (*_UNCHANGED, "details"))
        kept = "NEW.id IS OLD.id AND NEW.at IS OLD.at AND NEW.leaf_hash IS OLD.leaf_hash"
        sequencing = f"OLD.seq IS NULL AND OLD.seal IS NULL AND NEW.seq IS NOT NULL AND {same}"
        redaction = (
            "OLD.redacted_at IS NULL AND NEW.redacted_at IS NOT NULL"
            " AND OLD.purged_at IS NULL AND NEW.purged_at IS NULL"
            " AND NEW.seq IS OLD.seq AND NEW.seal IS OLD.seal AND NEW.tag IS OLD.tag AND NEW.outcome IS OLD.outcome"
            " AND NEW.request_id IS OLD.request_id"
        )
        purge = "OLD.purged_at IS NULL AND NEW.purged_at IS NOT NULL AND NEW.seq IS OLD.seq AND NEW.seal IS OLD.seal"
        op.execute(
            "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
            f"WHEN NOT ({kept} AND (({sequencing}) OR ({redaction}) OR ({purge}))) "
            f"BEGIN SELECT RAISE(ABORT, '{_REFUSED}'); END"
        )
        return
    new = ", ".join(f"NEW.{c}" for c in _UNCHANGED)
    old = ", ".join(f"OLD.{c}" for c in _UNCHANGED)
    op.execute(
        "CREATE FUNCTION audit_events_guard() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.id = OLD.id AND NEW.at = OLD.at AND NEW.leaf_hash IS NOT DISTINCT FROM OLD.leaf_hash THEN "
        "IF OLD.seq IS NULL AND OLD.seal IS NULL AND NEW.seq IS NOT NULL "
        f"AND ({new}, NEW.details::text) IS NOT DISTINCT FROM ({old}, OLD.details::text) THEN RETURN NEW; END IF; "
        "IF OLD.redacted_at IS NULL AND NEW.redacted_at IS NOT NULL "
        "AND OLD.purged_at IS NULL AND NEW.purged_at IS NULL "
        "AND (NEW.seq, NEW.seal, NEW.tag, NEW.outcome, NEW.request_id) "
        "IS NOT DISTINCT FROM (OLD.seq, OLD.seal, OLD.tag, OLD.outcome, OLD.request_id) THEN RETURN NEW; END IF; "
        "IF OLD.purged_at IS NULL AND NEW.purged_at IS NOT NULL "
        "AND (NEW.seq, NEW.seal) IS NOT DISTINCT FROM (OLD.seq, OLD.seal) THEN RETURN NEW; END IF; "
        f"END IF; RAISE EXCEPTION '{_REFUSED}'; END $$"
    )
    op.execute(
        "CREATE TRIGGER audit_events_guard BEFORE UPDATE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_events_guard()"
    )
    op.execute(
        "CREATE TRIGGER audit_events_append_only BEFORE DELETE OR TRUNCATE ON audit_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"
    )


def _restore_append_only() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
        op.execute(
            "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
            f"BEGIN SELECT RAISE(ABORT, '{_REFUSED}'); END"
        )
        return
    op.execute("DROP TRIGGER IF EXISTS audit_events_guard ON audit_events")
    op.execute("DROP FUNCTION IF EXISTS audit_events_guard()")
    op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
    op.execute(
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"
    )


def _backfill_leaves() -> None:
    """Events written before this revision get a salt and their leaf hash, as
    record_event now writes them; the sequencer then puts them in the tree,
    oldest first. Done in pages, so a large log never sits in memory whole."""
    from bastion.audit.entry import leaf_of, personal_hash
    from bastion.security import token_bytes

    events = sa.table(
        "audit_events",
        sa.column("id", sa.Integer),
        sa.column("at", UTCDateTime(timezone=True)),
        sa.column("tag", sa.String),
        sa.column("outcome", sa.String),
        sa.column("actor_id", sa.Uuid),
        sa.column("subject_id", sa.Uuid),
        sa.column("ip", sa.String),
        sa.column("request_id", sa.String),
        sa.column("details", sa.JSON),
        sa.column("leaf_hash", sa.LargeBinary),
        sa.column("personal_salt", sa.LargeBinary),
    )
    connection = op.get_bind()
    update = (
        events.update()
        .where(events.c.id == sa.bindparam("_id"))
        .values(leaf_hash=sa.bindparam("_leaf"), personal_salt=sa.bindparam("_salt"))
    )
    last = 0
    while True:
        rows = connection.execute(
            sa.select(events).where(events.c.id > last, events.c.leaf_hash.is_(None)).order_by(events.c.id).limit(5000)
        ).all()
        if not rows:
            return
        changes = []
        for row in rows:
            salt = token_bytes(32)
            personal = personal_hash(salt, row.actor_id, row.subject_id, row.ip, row.details)
            leaf = leaf_of(row.at, row.tag, row.outcome, row.request_id, personal)
            changes.append({"_id": row.id, "_leaf": leaf, "_salt": salt})
        connection.execute(update, changes)
        last = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("password_reset_required")
        batch_op.drop_column("step_up_until")

    _restore_append_only()
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_seq"))
        batch_op.drop_column("purged_at")
        batch_op.drop_column("redacted_at")
        batch_op.drop_column("seal")
        batch_op.drop_column("seq")
        batch_op.drop_column("personal_salt")
        batch_op.drop_column("leaf_hash")

    op.drop_table("known_devices")
    with op.batch_alter_table("alert_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_deliveries_due")
        batch_op.drop_index(batch_op.f("ix_alert_deliveries_alert_id"))

    op.drop_table("alert_deliveries")
    op.drop_table("leases")
    op.drop_table("incident_state")
    with op.batch_alter_table("blocks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_blocks_network"))
        batch_op.drop_index(batch_op.f("ix_blocks_expires_at"))

    op.drop_table("blocks")
    op.drop_table("audit_tree")
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_checkpoints_size"))
        batch_op.drop_index(batch_op.f("ix_audit_checkpoints_at"))

    op.drop_table("audit_checkpoints")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ux_alerts_open")
        batch_op.drop_index(batch_op.f("ix_alerts_rule"))
        batch_op.drop_index("ix_alerts_open")
        batch_op.drop_index(batch_op.f("ix_alerts_first_seen"))

    op.drop_table("alerts")
