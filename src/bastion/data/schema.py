"""Collections as the data domain uses them: a definition, its table, its
validation models and its access rules, built once per catalog version."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import BaseModel

from bastion.data.tables import build_table, indexed_column
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
from bastion.settings import CollectionSettings, ConfigError, FieldSettings, RecordOp

if TYPE_CHECKING:
    from bastion.access import Principal


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
    # than running it. Parameters: id (and owner for fetch_own); the row for insert.
    @functools.cached_property
    def insert(self) -> sa.Insert:
        return sa.insert(self.table)

    @functools.cached_property
    def fetch_any(self) -> sa.Select[Any]:
        return sa.select(self.table).where(self.table.c.id == sa.bindparam("id"))

    @functools.cached_property
    def fetch_own(self) -> sa.Select[Any]:
        return self.fetch_any.where(self.table.c.owner == sa.bindparam("owner"))

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
        return [
            (collection, name)
            for collection in self.collections.values()
            for name, kind in collection.fields.items()
            if kind.type == "relation" and kind.collection == target
        ]


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
