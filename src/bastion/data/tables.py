"""One real SQL table per collection, and the plan that brings the database to
the declared collections.

Tables are built with SQLAlchemy Core from the definitions, never from SQL
text, and every identifier is quoted by SQLAlchemy. A collection ``notes``
lives in table ``c_notes`` (the prefix keeps collections apart from Bastion's
own tables); an encrypted field ``secret`` is a binary column, plus
``secret__bidx`` (an HMAC blind index) when it is searchable.

What has been applied is kept in ``data_collections`` (``models.DEFINITIONS``,
created by a migration), one JSON definition per collection, so a plan
compares definitions rather than guessing types back from each database's
catalog. Lengths, bounds and patterns are enforced by
validation, not by column types, so changing them needs no DDL.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.types import TypeDecorator

from bastion.data.models import COLLECTION_TABLE_PREFIX, DEFINITIONS
from bastion.db.types import UTCDateTime
from bastion.security import hash_token
from bastion.settings import CollectionSettings, FieldSettings

if TYPE_CHECKING:
    from alembic.operations import Operations

BLIND_INDEX_SUFFIX = "__bidx"
SERVER_FIELDS = ("id", "owner", "created_at", "updated_at")


def table_name(collection: str) -> str:
    return COLLECTION_TABLE_PREFIX + collection


def index_name(collection: str, column: str) -> str:
    name = f"ix_c_{collection}_{column}"
    # PostgreSQL truncates identifiers at 63 bytes; long names get a digest instead.
    return name if len(name) <= 63 else f"ix_c_{hash_token(name)[:24]}"


class RecordUuid(TypeDecorator[Any]):
    """A record's id, owner or relation as records are read to be shown: the
    driver's value, made text as cheaply as each driver allows.

    SQLite keeps a UUID as 32 hex digits: they are cut into the canonical form
    directly, instead of parsing a ``uuid.UUID`` that would only be turned
    back into text (twice per row, and per relation). asyncpg's UUID is kept
    as it comes; ``str`` makes it text. Used in the SELECT list only
    (``Collection.selected``); WHERE clauses compare the plain columns.
    """

    impl = sa.Uuid
    cache_ok = True

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        return _dashed if dialect.name == "sqlite" else None


def _dashed(value: str | None) -> str | None:
    if value is None:
        return None
    return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"


class RecordTime(TypeDecorator[Any]):
    """A record's timestamp or datetime field as records are read to be shown:
    ISO 8601 text in UTC, as ``datetime.isoformat`` writes it.

    SQLite keeps a ``UTCDateTime`` as ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC
    (SQLAlchemy's storage format, microseconds always written): the text is
    rewritten directly rather than parsed into a datetime only to be printed.
    asyncpg hands over an aware datetime, printed in UTC. Used in the SELECT
    list only (``Collection.selected``).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        return _iso_from_sqlite if dialect.name == "sqlite" else _iso_in_utc


def _iso_from_sqlite(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.replace(" ", "T", 1)
    # isoformat() leaves out a zero fraction.
    return (text[:-7] if text.endswith(".000000") else text) + "+00:00"


def _iso_in_utc(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat()


def _column_type(kind: FieldSettings) -> Any:
    types: dict[str, Any] = {
        "integer": sa.BigInteger(),
        "number": sa.Double(),
        "boolean": sa.Boolean(),
        "datetime": UTCDateTime(),
        "json": sa.JSON(),
        "relation": sa.Uuid(),
        "encrypted": sa.LargeBinary(),
    }
    return types.get(kind.type, sa.Text())


def field_columns(name: str, kind: FieldSettings) -> list[sa.Column[Any]]:
    columns: list[sa.Column[Any]] = [sa.Column(name, _column_type(kind), nullable=True)]
    if kind.type == "encrypted" and kind.searchable:
        columns.append(sa.Column(name + BLIND_INDEX_SUFFIX, sa.String(64), nullable=True))
    return columns


def indexed_column(name: str, kind: FieldSettings) -> str | None:
    """The column a field's index covers (with ``id``, for keyset pagination), if any."""
    if kind.type == "encrypted":
        return name + BLIND_INDEX_SUFFIX if kind.searchable else None
    return name if kind.filterable or kind.sortable else None


def build_table(metadata: sa.MetaData, collection: str, settings: CollectionSettings) -> sa.Table:
    if "users" not in metadata.tables:
        # Only so the owner's foreign key resolves; the identity domain owns the table.
        sa.Table("users", metadata, sa.Column("id", sa.Uuid, primary_key=True))
    name = table_name(collection)
    columns: list[Any] = [
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("owner", sa.Uuid, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    ]
    for field_name, kind in settings.fields.items():
        columns.extend(field_columns(field_name, kind))
    table = sa.Table(name, metadata, *columns)
    sa.Index(index_name(collection, "owner"), table.c.owner, table.c.id)
    for field_name, kind in settings.fields.items():
        column = indexed_column(field_name, kind)
        if column is not None:
            sa.Index(index_name(collection, column), table.c[column], table.c.id)
    return table


# --- plans -------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    description: str
    destructive: bool
    run: Callable[[Operations], None] = field(repr=False)


@dataclass
class Plan:
    changes: list[Change]
    definitions: dict[str, CollectionSettings | None]  # what to record afterwards (None: forget)

    @property
    def destructive(self) -> list[Change]:
        return [change for change in self.changes if change.destructive]

    @property
    def empty(self) -> bool:
        return not self.changes and not self.definitions


def plan(current: dict[str, CollectionSettings], desired: dict[str, CollectionSettings]) -> Plan:
    """The changes that turn the ``current`` collections into the ``desired`` ones."""
    changes: list[Change] = []
    definitions: dict[str, CollectionSettings | None] = {}
    for name in sorted(desired.keys() - current.keys()):
        table = build_table(sa.MetaData(), name, desired[name])
        changes.append(Change(f"create collection {name}", False, _create_table(table)))
        definitions[name] = desired[name]
    for name in sorted(current.keys() - desired.keys()):
        changes.append(Change(f"DROP collection {name} and all its records", True, _drop_table(name)))
        definitions[name] = None
    for name in sorted(current.keys() & desired.keys()):
        if current[name] != desired[name]:
            changes.extend(_field_changes(name, current[name], desired[name]))
            definitions[name] = desired[name]
    return Plan(changes, definitions)


def _field_changes(collection: str, old: CollectionSettings, new: CollectionSettings) -> list[Change]:
    changes: list[Change] = []
    for name in sorted(new.fields.keys() - old.fields.keys()):
        changes.append(Change(f"add field {collection}.{name}", False, _add_field(collection, name, new.fields[name])))
    for name in sorted(old.fields.keys() - new.fields.keys()):
        changes.append(
            Change(
                f"DROP field {collection}.{name} and its values",
                True,
                _drop_field(collection, name, old.fields[name]),
            )
        )
    for name in sorted(old.fields.keys() & new.fields.keys()):
        before, after = old.fields[name], new.fields[name]
        if before == after:
            continue
        if (before.type, before.searchable, before.collection) != (after.type, after.searchable, after.collection):
            # Values of one type cannot become another's: the column starts empty.
            changes.append(
                Change(
                    f"REPLACE field {collection}.{name} ({before.type} -> {after.type}): its values are dropped",  # noqa: S608 - a message, not SQL
                    True,
                    _replace_field(collection, name, before, after),
                )
            )
            continue
        was, now = indexed_column(name, before), indexed_column(name, after)
        if was != now:
            changes.append(Change(f"re-index {collection}.{name}", False, _reindex(collection, was, now)))
        for option in ("filterable", "sortable"):
            if getattr(before, option) != getattr(after, option):
                state = option if getattr(after, option) else f"no longer {option}"
                changes.append(Change(f"make {collection}.{name} {state}", False, _nothing))
        if before.model_copy(update={"filterable": False, "sortable": False}) != after.model_copy(
            update={"filterable": False, "sortable": False}
        ):
            changes.append(
                Change(f"change validation of {collection}.{name} (existing values are kept)", False, _nothing)
            )
    if old.rules != new.rules:
        changes.append(Change(f"change the access rules of {collection}", False, _nothing))
    return changes


def _nothing(_: Operations) -> None:
    """Validation and rules live in the definition, not in the schema."""


def _create_table(table: sa.Table) -> Callable[[Operations], None]:
    return lambda ops: table.create(ops.get_bind())  # with its indexes


def _drop_table(collection: str) -> Callable[[Operations], None]:
    return lambda ops: ops.drop_table(table_name(collection))


def _add_field(collection: str, name: str, kind: FieldSettings) -> Callable[[Operations], None]:
    def run(ops: Operations) -> None:
        for column in field_columns(name, kind):
            ops.add_column(table_name(collection), column)
        _reindex(collection, None, indexed_column(name, kind))(ops)

    return run


def _drop_field(collection: str, name: str, kind: FieldSettings) -> Callable[[Operations], None]:
    def run(ops: Operations) -> None:
        # SQLite drops a column only once no index covers it.
        _reindex(collection, indexed_column(name, kind), None)(ops)
        for column in field_columns(name, kind):
            ops.drop_column(table_name(collection), column.name)

    return run


def _replace_field(
    collection: str, name: str, before: FieldSettings, after: FieldSettings
) -> Callable[[Operations], None]:
    def run(ops: Operations) -> None:
        _drop_field(collection, name, before)(ops)
        _add_field(collection, name, after)(ops)

    return run


def _reindex(collection: str, was: str | None, now: str | None) -> Callable[[Operations], None]:
    def run(ops: Operations) -> None:
        if was is not None:
            ops.drop_index(index_name(collection, was), table_name=table_name(collection))
        if now is not None:
            ops.create_index(index_name(collection, now), table_name(collection), [now, "id"])

    return run


# --- applying ----------------------------------------------------------------


# The applied definitions, as a running server re-reads them (``DataService``).
DEFINITIONS_SELECT = sa.select(DEFINITIONS.c.name, DEFINITIONS.c.definition)


def read_definitions(connection: Connection, source: str | None = None) -> dict[str, CollectionSettings]:
    """The applied definitions (of one source, or all), for schema work on a SQLAlchemy connection."""
    query = DEFINITIONS_SELECT
    if source is not None:
        query = query.where(DEFINITIONS.c.source == source)
    return parse_definitions(raw_definitions(connection.execute(query)))


def raw_definitions(rows: Iterable[Any]) -> dict[str, Any]:
    """(name, definition) rows as {name: the definition's JSON value}."""
    return {name: _as_dict(definition) for name, definition in rows}


def parse_definitions(raw: Mapping[str, Any]) -> dict[str, CollectionSettings]:
    return {name: CollectionSettings.model_validate(definition) for name, definition in raw.items()}


def _as_dict(definition: Any) -> Any:
    # Some drivers hand JSON back as text.
    return json.loads(definition) if isinstance(definition, str) else definition


def sources(connection: Connection) -> dict[str, str]:
    return dict(connection.execute(sa.select(DEFINITIONS.c.name, DEFINITIONS.c.source)).all())


def run_plan(connection: Connection, changes: Plan, *, source: str, now: dt.datetime) -> None:
    """Apply every change and record the definitions, in the caller's transaction."""
    # Alembic (~10 MiB) loads only where a plan is applied (`bastion migrate`,
    # `serve` before it starts its listeners), not in every server worker.
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    ops = Operations(MigrationContext.configure(connection))
    for change in changes.changes:
        change.run(ops)
    for name, definition in changes.definitions.items():
        connection.execute(sa.delete(DEFINITIONS).where(DEFINITIONS.c.name == name))
        if definition is not None:
            connection.execute(
                sa.insert(DEFINITIONS).values(
                    name=name,
                    source=source,
                    definition=definition.model_dump(mode="json", exclude_defaults=True),
                    applied_at=now,
                )
            )
