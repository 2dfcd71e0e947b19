"""Collections as the data domain uses them: a definition, its table, its
validation models, its access rules, its statements and its presenter, built
once per catalog version.

Composing and compiling a statement costs more than running it, so every
statement a record request runs is built here once per collection, with named
``bindparam`` s, and ``bastion.db`` compiles each once per dialect. A list's
statement depends on the query's *shape* (which filters and operators, how many
``in`` values, the sort, whether a cursor is given), not on its values, so it is
built once per shape and kept (``Collection.list_statement``, at most
``LIST_SHAPES`` per collection). What a row needs to become JSON (which columns
are copied, converted or decrypted) is decided once per collection too
(``Presenter``).
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import BaseModel

from bastion.data.tables import (
    BLIND_INDEX_SUFFIX,
    SERVER_FIELDS,
    RecordTime,
    RecordUuid,
    build_table,
    indexed_column,
)
from bastion.data.validation import (
    DEFAULT_MAX_LENGTH,
    MAX_INDEXED_LENGTH,
    create_body_model,
    filter_parameters,
    max_length,
    page_model,
    query_model,
    record_model,
    update_body_model,
)
from bastion.db.types import UTCDateTime
from bastion.settings import CollectionSettings, ConfigError, FieldSettings, RecordOp

if TYPE_CHECKING:
    from bastion.access import Principal
    from bastion.data.sealing import FieldSealer
    from bastion.security import DataKey

Record = dict[str, Any]
# Distinct list statements kept per collection (least recently used dropped first).
LIST_SHAPES = 256
# An `in` filter's values are padded (with its last value) to the next of these
# counts, so that 1..MAX_IN_VALUES values make a handful of shapes, not fifty.
IN_SIZES = (1, 2, 4, 8, 16, 32, 64)
_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": lambda c, v: c == v,
    "ne": lambda c, v: c.is_distinct_from(v),
    "lt": lambda c, v: c < v,
    "lte": lambda c, v: c <= v,
    "gt": lambda c, v: c > v,
    "gte": lambda c, v: c >= v,
}


@dataclass(frozen=True)
class ListShape:
    """What a list statement depends on besides its parameters' values.

    ``filters``: (field, operator, number of bound values) in the query model's
    order; ``cursor``: None (first page), ``"value"`` or ``"null"`` (the sort
    key's value at the cursor is NULL: another condition).
    """

    own: bool
    filters: tuple[tuple[str, str, int], ...]
    sort: str
    cursor: str | None


def in_size(count: int) -> int:
    """How many bound values an `in` filter of ``count`` values is given (padded)."""
    return next((size for size in IN_SIZES if size >= count), count)


def record_permission(collection: str, op: RecordOp) -> str:
    """The RBAC permission an operation on a collection needs, e.g. ``records:notes:read``."""
    return f"records:{collection}:{op}"


class Verdict(Enum):
    ALLOW = "allow"
    OWN_RECORDS = "own records"  # allowed, on the caller's own records only
    UNAUTHENTICATED = "unauthenticated"
    DENY = "deny"


@dataclass(frozen=True)
class Collection:
    name: str
    settings: CollectionSettings
    table: sa.Table
    create_model: type[BaseModel]
    update_model: type[BaseModel]
    query_model: type[BaseModel]
    record_model: type[BaseModel]
    page_model: type[BaseModel]
    rules: dict[str, tuple[str, ...]]
    filters: dict[str, tuple[str, str]] = field(default_factory=dict)
    _lists: OrderedDict[ListShape, sa.Select[Any]] = field(
        default_factory=OrderedDict, init=False, repr=False, compare=False
    )

    @classmethod
    def build(cls, metadata: sa.MetaData, name: str, settings: CollectionSettings) -> Collection:
        record = record_model(name, settings)
        return cls(
            name=name,
            settings=settings,
            table=build_table(metadata, name, settings),
            create_model=create_body_model(name, settings),
            update_model=update_body_model(name, settings),
            query_model=query_model(name, settings),
            record_model=record,
            page_model=page_model(name, record),
            rules={op: (rule,) if isinstance(rule, str) else tuple(rule) for op, rule in settings.rules.items()},
            filters=filter_parameters(settings),
        )

    @property
    def fields(self) -> dict[str, FieldSettings]:
        return self.settings.fields

    # Built once per collection: composing a statement per request costs more
    # than running it. Parameters: id (and owner for the _own ones); the row for
    # insert; _record_id and the changed columns for update.
    @functools.cached_property
    def insert(self) -> sa.Insert:
        return sa.insert(self.table)

    @functools.cached_property
    def selected(self) -> list[Any]:
        """The columns a record is read with (the table's, in its order): ids and times
        as the text the API shows (``RecordUuid``, ``RecordTime``)."""
        selected: list[Any] = []
        for column in self.table.c:
            if isinstance(column.type, sa.Uuid):
                selected.append(sa.type_coerce(column, RecordUuid()).label(column.key))
            elif isinstance(column.type, UTCDateTime):
                selected.append(sa.type_coerce(column, RecordTime()).label(column.key))
            else:
                selected.append(column)
        return selected

    @functools.cached_property
    def fetch_any(self) -> sa.Select[Any]:
        return sa.select(*self.selected).where(self.table.c.id == sa.bindparam("id"))

    @functools.cached_property
    def fetch_own(self) -> sa.Select[Any]:
        return self.fetch_any.where(self.table.c.owner == sa.bindparam("owner"))

    @functools.cached_property
    def exists_any(self) -> sa.Select[Any]:
        return sa.select(self.table.c.id).where(self.table.c.id == sa.bindparam("id"))

    @functools.cached_property
    def exists_own(self) -> sa.Select[Any]:
        return self.exists_any.where(self.table.c.owner == sa.bindparam("owner"))

    @functools.cached_property
    def update(self) -> sa.Update:
        # The SET columns come from the parameters' names (bastion.db); the id's
        # parameter is named so that no field can be called the same.
        return sa.update(self.table).where(self.table.c.id == sa.bindparam("_record_id"))

    @functools.cached_property
    def delete_any(self) -> sa.Delete:
        return sa.delete(self.table).where(self.table.c.id == sa.bindparam("id"))

    @functools.cached_property
    def delete_own(self) -> sa.Delete:
        return self.delete_any.where(self.table.c.owner == sa.bindparam("owner"))

    @functools.cached_property
    def clear_relations(self) -> dict[str, sa.Update]:
        """Per relation field: set it to NULL where it points at ``_target`` (a deleted record)."""
        return {
            name: sa.update(self.table).where(self.table.c[name] == sa.bindparam("_target")).values({name: None})
            for name, kind in self.fields.items()
            if kind.type == "relation"
        }

    # A user's records in every collection, for export and erasure. Parameter: owner.
    @functools.cached_property
    def of_owner(self) -> sa.Select[Any]:
        return sa.select(*self.selected).where(self.table.c.owner == sa.bindparam("owner")).order_by(self.table.c.id)

    @functools.cached_property
    def delete_of_owner(self) -> sa.Delete:
        return sa.delete(self.table).where(self.table.c.owner == sa.bindparam("owner"))

    def clear_relations_to_owner(self, target: Collection) -> dict[str, sa.Update]:
        """Per relation field into ``target``: set it to NULL where it points at a record of ``owner``."""
        theirs = sa.select(target.table.c.id).where(target.table.c.owner == sa.bindparam("owner")).scalar_subquery()
        return {
            name: sa.update(self.table).where(self.table.c[name].in_(theirs)).values({name: None})
            for name, kind in self.fields.items()
            if kind.type == "relation" and kind.collection == target.name
        }

    @property
    def has_sealed_fields(self) -> bool:
        return bool(self.presenter.sealed)

    @functools.cached_property
    def presenter(self) -> Presenter:
        return Presenter(self)

    def filter_column(self, name: str) -> sa.Column[Any]:
        """The column a filter on field ``name`` compares (an encrypted field's blind index)."""
        if self.fields[name].type == "encrypted":
            return self.table.c[name + BLIND_INDEX_SUFFIX]
        return self.table.c[name]

    def list_statement(self, shape: ListShape) -> sa.Select[Any]:
        """The statement of a list of this shape, built on first use and kept.

        Parameters: ``limit``; ``owner`` when ``own``; ``f<i>`` per filter
        (``f<i>_<j>`` per value of an ``in``, ``f<i>_len`` for a ``prefix``);
        ``c_value`` and ``c_id`` with a cursor.
        """
        found = self._lists.get(shape)
        if found is not None:
            self._lists.move_to_end(shape)
            return found
        found = self._build_list(shape)
        self._lists[shape] = found
        if len(self._lists) > LIST_SHAPES:
            self._lists.popitem(last=False)
        return found

    def _build_list(self, shape: ListShape) -> sa.Select[Any]:
        table = self.table
        conditions: list[Any] = []
        if shape.own:
            conditions.append(table.c.owner == sa.bindparam("owner"))
        for i, (name, op, count) in enumerate(shape.filters):
            column = self.filter_column(name)
            if op == "in":
                conditions.append(column.in_([sa.bindparam(f"f{i}_{j}", type_=column.type) for j in range(count)]))
            elif op == "prefix":
                # substr rather than LIKE: the same exact, case-sensitive match on
                # SQLite and PostgreSQL, and no wildcard characters to escape.
                length = sa.bindparam(f"f{i}_len", type_=sa.Integer())
                conditions.append(sa.func.substr(column, 1, length) == sa.bindparam(f"f{i}", type_=column.type))
            else:
                conditions.append(_COMPARISONS[op](column, sa.bindparam(f"f{i}", type_=column.type)))
        key = shape.sort.removeprefix("-")
        descending = shape.sort.startswith("-")
        if shape.cursor is not None:
            conditions.append(_after(table, key, descending, null=shape.cursor == "null"))
        limit = sa.bindparam("limit", type_=sa.Integer())
        return sa.select(*self.selected).where(*conditions).order_by(*_order(table, key, descending)).limit(limit)

    def decide(self, op: RecordOp, caller: Principal | None) -> Verdict:
        """Whether ``caller`` may perform ``op``: unset rules deny (default deny).

        Beyond the collection's rule, a signed-in caller needs the RBAC
        permission ``records:<collection>:<op>`` (the ``user`` role holds
        ``records:*``), so an API key scoped to other permissions, or a role
        without records, cannot use the collection. ``public`` needs nothing.
        """
        rules = self.rules.get(op, ())
        if "public" in rules:
            return Verdict.ALLOW
        if caller is None:
            return Verdict.UNAUTHENTICATED if rules else Verdict.DENY
        if not caller.can(record_permission(self.name, op)):
            return Verdict.DENY
        for rule in rules:
            kind, _, argument = rule.partition(":")
            if (
                kind == "authenticated"
                or (kind == "role" and caller.has_role(argument))
                or (kind == "permission" and caller.can(argument))
            ):
                return Verdict.ALLOW
        if "owner" in rules:
            # Creating is always "your own record": the caller becomes its owner.
            return Verdict.ALLOW if op == "create" else Verdict.OWN_RECORDS
        return Verdict.DENY


@dataclass(frozen=True)
class Catalog:
    """Every applied collection, by name. Immutable: a change builds a new catalog."""

    collections: dict[str, Collection]
    version: int = 0

    @classmethod
    def build(cls, definitions: dict[str, CollectionSettings], version: int = 0) -> Catalog:
        check_relations(definitions)
        metadata = sa.MetaData()
        return cls(
            {name: Collection.build(metadata, name, settings) for name, settings in sorted(definitions.items())},
            version,
        )

    def referrers(self, target: str) -> list[tuple[Collection, str]]:
        """(collection, field) pairs whose relation points at ``target``."""
        return self._referrers.get(target, [])

    @functools.cached_property
    def _referrers(self) -> dict[str, list[tuple[Collection, str]]]:
        found: dict[str, list[tuple[Collection, str]]] = {}
        for collection in self.collections.values():
            for name, kind in collection.fields.items():
                if kind.type == "relation":
                    found.setdefault(str(kind.collection), []).append((collection, name))
        return found


def check_relations(definitions: dict[str, CollectionSettings]) -> None:
    """Refuse definitions a table could not hold: dangling relations, oversized indexes."""
    for name, settings in definitions.items():
        for field_name, kind in settings.fields.items():
            if kind.type == "relation" and kind.collection not in definitions:
                raise ConfigError(
                    f"collections.{name}.fields.{field_name}: relation to unknown collection {kind.collection!r}"
                )
            if (
                indexed_column(field_name, kind) == field_name
                and kind.type in DEFAULT_MAX_LENGTH
                and max_length(kind) > MAX_INDEXED_LENGTH
            ):
                raise ConfigError(
                    f"collections.{name}.fields.{field_name}: a filterable or sortable field "
                    f"needs max_length <= {MAX_INDEXED_LENGTH}"
                )


def new_record_id(now_ms: int, random_bits: bytes) -> uuid.UUID:
    """A UUIDv7 (RFC 9562 §5.7): 48 bits of Unix milliseconds, then random.

    Time-ordered ids make ``id`` order creation order, so one index per field
    serves both filtering and the default sort, and new rows append to the
    primary-key index instead of landing at random pages. The 74 random bits
    keep ids unguessable; access is checked on every request anyway.
    """
    value = (now_ms & (2**48 - 1)) << 80 | int.from_bytes(random_bits[:10], "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant
    return uuid.UUID(int=value)


class Presenter:
    """A row of a collection's table as the API shows it, JSON-ready.

    Which columns are copied as they are, converted (datetimes, relations,
    URLs, e-mail addresses) or decrypted is decided here, once per collection;
    per row there is only the work itself. Decryption raises InvalidCiphertext
    for a tampered or misplaced value.
    """

    def __init__(self, collection: Collection) -> None:
        self.collection = collection.name
        self.columns = tuple(collection.table.c.keys())
        position = {name: i for i, name in enumerate(self.columns)}
        assert self.columns[:4] == SERVER_FIELDS  # noqa: S101 - build_table's order, relied on below
        self.empty: Record = dict.fromkeys(("id", "owner", "created_at", "updated_at", *collection.fields))
        self.copied: list[tuple[str, int]] = []
        self.converted: list[tuple[str, int, Callable[[Any], Any]]] = []
        self.sealed: list[tuple[str, int]] = []
        self._owner: tuple[uuid.UUID | None, str] = (None, "")
        for name, kind in collection.fields.items():
            if kind.type == "encrypted":
                self.sealed.append((name, position[name]))
            elif kind.type == "datetime":
                self.converted.append((name, position[name], _time_text))
            elif kind.type in {"relation", "url", "email"}:
                self.converted.append((name, position[name], str))
            else:
                self.copied.append((name, position[name]))

    def row(self, mapping: Mapping[str, Any]) -> tuple[Any, ...]:
        """A row as the table would return it, from column values by name."""
        return tuple(mapping.get(name) for name in self.columns)

    def __call__(
        self,
        row: Sequence[Any],
        sealer: FieldSealer,
        plaintext: Mapping[str, Any] | None = None,
        keys: Mapping[str, DataKey] | None = None,
    ) -> Record:
        """``row`` (in the table's column order); ``plaintext``: sealed values already known (just written);
        ``keys``: the owners' data keys by owner id (text), for values sealed with them."""
        record_id = str(row[0])
        owner = row[1]
        out = self.empty.copy()
        out["id"] = record_id
        text = None
        if owner is not None:
            # The rows of a list mostly share one owner: its text is made once.
            known, text = self._owner
            if owner != known:
                text = str(owner)
                self._owner = (owner, text)
            out["owner"] = text
        out["created_at"] = _time_text(row[2])
        out["updated_at"] = _time_text(row[3])
        for name, i in self.copied:
            out[name] = row[i]
        for name, i, convert in self.converted:
            value = row[i]
            out[name] = None if value is None else convert(value)
        key = keys.get(text) if keys and text is not None else None
        for name, i in self.sealed:
            value = row[i]
            if value is not None:
                known = plaintext.get(name) if plaintext else None
                out[name] = known if known is not None else sealer.open(self.collection, name, record_id, value, key)
        return out


def _time_text(value: dt.datetime | str) -> str:
    """A time as the API shows it: read rows carry it as text (``RecordTime``), rows just written as a datetime."""
    return value if isinstance(value, str) else value.astimezone(dt.UTC).isoformat()


def _order(table: sa.Table, key: str, descending: bool) -> list[Any]:
    if key == "id":
        return [table.c.id.desc() if descending else table.c.id.asc()]
    column = table.c[key]
    if descending:
        return [column.desc().nulls_last(), table.c.id.desc()]
    return [column.asc().nulls_first(), table.c.id.asc()]


def _after(table: sa.Table, key: str, descending: bool, *, null: bool) -> Any:
    """Rows strictly after the cursor (``c_value``, ``c_id``) in the order of ``_order`` (keyset pagination);
    ``null``: the cursor's ``c_value`` is NULL (no ``c_value`` parameter then)."""
    last_id = sa.bindparam("c_id", type_=table.c.id.type)
    beyond = table.c.id < last_id if descending else table.c.id > last_id
    if key == "id":
        return beyond
    column = table.c[key]
    value = sa.bindparam("c_value", type_=column.type)
    if descending:  # NULLs come last
        if null:
            return sa.and_(column.is_(None), beyond)
        return sa.or_(column < value, sa.and_(column == value, beyond), column.is_(None))
    if null:  # NULLs come first
        return sa.or_(sa.and_(column.is_(None), beyond), column.is_not(None))
    return sa.or_(column > value, sa.and_(column == value, beyond))
