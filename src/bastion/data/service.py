"""Records: create, read, update, delete and list, under each collection's rules.

Every operation decides access before touching a row, and a record the caller
may not see is answered exactly like one that does not exist (ASVS V8.2.2).
Every refusal is an audit event; so is every change, in the same transaction
as the change. Queries are SQLAlchemy Core over the collection's table with
bound parameters; the only names that reach SQL are declared field names.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bastion.audit import EventTag, Origin, Outcome, record_event
from bastion.clock import Clock
from bastion.data.errors import (
    CollectionChangeRefused,
    CollectionNotFound,
    CorruptRecord,
    DestructiveChanges,
    InvalidQuery,
    InvalidRecord,
    RecordNotFound,
    RecordsForbidden,
)
from bastion.data.schema import Catalog, Collection, Verdict, check_relations, new_record_id
from bastion.data.sealing import FieldSealer
from bastion.data.tables import BLIND_INDEX_SUFFIX, Plan, plan, read_definitions, run_plan, sources
from bastion.data.validation import query_value_type
from bastion.db import create_engine
from bastion.http.handlers import locate
from bastion.http.problems import NotReady, Unauthorized
from bastion.logging import get_logger
from bastion.security import InvalidCiphertext, token_bytes
from bastion.settings import CollectionSettings, ConfigError, RecordOp, Settings
from bastion.uow import UnitOfWork

if TYPE_CHECKING:
    from bastion.access import Principal

log = get_logger(__name__)

# How often a running server looks at the applied definitions again: they
# change under it (`bastion collections apply`, `bastion migrate`, another
# instance's admin API), and a change must not wait for a restart. At most one
# look per interval, however many requests (or random collection names) come.
CATALOG_RELOAD_SECONDS = 1.0

Record = dict[str, Any]


@dataclass(frozen=True)
class Page:
    items: list[Record]
    next_cursor: str | None


class DataService:
    def __init__(self, *, clock: Clock, engine: AsyncEngine, sealer: FieldSealer) -> None:
        self.clock = clock
        self.engine = engine
        self.sealer = sealer
        self.catalog = Catalog({})
        self._definitions: dict[str, CollectionSettings] | None = None
        self._loaded_at = float("-inf")

    # --- the catalog ----------------------------------------------------

    async def refresh(self) -> None:
        """Load the applied collection definitions; the catalog is rebuilt only
        when they differ from the ones it was built from."""
        async with self.engine.begin() as connection:
            definitions = await connection.run_sync(read_definitions)
        if definitions != self._definitions:
            self.catalog = Catalog.build(definitions, self.catalog.version + 1)
            self._definitions = definitions
        self._loaded_at = time.monotonic()

    async def start(self) -> None:
        """Load the catalog at start-up; with the database down, start anyway (``/readyz``
        says 503) and load it on the first request that needs it."""
        try:
            await self.refresh()
        except (OSError, SQLAlchemyError) as exc:
            log.warning("collections not loaded", error=type(exc).__name__)

    async def collection(self, name: str) -> Collection:
        """The collection as currently applied, at most CATALOG_RELOAD_SECONDS old."""
        if time.monotonic() - self._loaded_at > CATALOG_RELOAD_SECONDS:
            self._loaded_at = time.monotonic()  # before the await: one look, not one per waiting request
            try:
                await self.refresh()
            except (OSError, SQLAlchemyError):
                if name not in self.catalog.collections:
                    raise NotReady from None
                # A known collection is served as last loaded; its own query meets the outage.
        found = self.catalog.collections.get(name)
        if found is None:
            raise CollectionNotFound
        return found

    async def define(
        self,
        name: str,
        definition: CollectionSettings | None,
        *,
        force: bool = False,
        origin: Origin,
        actor_id: uuid.UUID | None = None,
    ) -> Plan:
        """Create, change or (``None``) drop one collection for the admin API.

        Collections declared in bastion.toml are changed there, not here.
        Raises CollectionChangeRefused when the change drops data and
        ``force`` is false, or clashes with other collections.
        """
        async with self.engine.begin() as connection:
            current = await connection.run_sync(read_definitions)
            owners = await connection.run_sync(sources)
            if owners.get(name, "api") != "api":
                raise CollectionChangeRefused([f"{name} is declared in bastion.toml; change it there"])
            desired = {k: v for k, v in current.items() if k != name}
            if definition is not None:
                desired[name] = definition
            try:
                check_relations(desired)
            except ConfigError as exc:
                raise CollectionChangeRefused([str(exc)]) from None
            before = {name: current[name]} if name in current else {}
            changes = plan(before, {name: definition} if definition is not None else {})
            if changes.destructive and not force:
                raise CollectionChangeRefused([c.description for c in changes.destructive])
            await connection.run_sync(lambda c: run_plan(c, changes, source="api", now=self.clock.now()))
            async with AsyncSession(bind=connection) as db:
                _audit_plan(db, self.clock, changes, origin, actor_id)
                await db.commit()  # writes the event; the connection's transaction commits it
        await self.refresh()
        return changes

    # --- records --------------------------------------------------------

    async def create(self, uow: UnitOfWork, name: str, caller: Principal | None, body: bytes) -> Record:
        collection = await self.collection(name)
        await self._admit(uow, collection, "create", caller, record_id=None)
        data = _parse_body(collection.create_model, body)
        values = data.model_dump()
        await self._check_relations(uow, collection, caller, values)
        now = self.clock.now()
        record_id = new_record_id(int(now.timestamp() * 1000), token_bytes(10))
        row = {
            "id": record_id,
            "owner": caller.user_id if caller else None,
            "created_at": now,
            "updated_at": now,
            **self._to_columns(collection, record_id, values),
        }
        await uow.db.execute(collection.insert, row)
        self._audit(uow, EventTag.RECORD_CREATE, collection, "create", caller, record_id)
        return self._present(collection, row, plaintext=values)

    async def read(self, uow: UnitOfWork, name: str, caller: Principal | None, record_id: uuid.UUID) -> Record:
        collection = await self.collection(name)
        row = await self._fetch(uow, collection, "read", caller, record_id)
        return self._present_checked(uow, collection, caller, row)

    async def update(
        self, uow: UnitOfWork, name: str, caller: Principal | None, record_id: uuid.UUID, body: bytes
    ) -> Record:
        collection = await self.collection(name)
        row = dict(await self._fetch(uow, collection, "update", caller, record_id))
        data = _parse_body(collection.update_model, body)
        values = data.model_dump(include=data.model_fields_set)
        await self._check_relations(uow, collection, caller, values)
        changes = {"updated_at": self.clock.now(), **self._to_columns(collection, record_id, values)}
        await uow.db.execute(sa.update(collection.table).where(collection.table.c.id == record_id).values(changes))
        self._audit(uow, EventTag.RECORD_UPDATE, collection, "update", caller, record_id)
        return self._present_checked(uow, collection, caller, {**row, **changes}, plaintext=values)

    async def delete(self, uow: UnitOfWork, name: str, caller: Principal | None, record_id: uuid.UUID) -> None:
        collection = await self.collection(name)
        verdict = await self._admit(uow, collection, "delete", caller, record_id=record_id)
        table = collection.table
        statement = sa.delete(table).where(table.c.id == record_id)
        if verdict is Verdict.OWN_RECORDS and caller is not None:
            statement = statement.where(table.c.owner == caller.user_id)
        result = await uow.db.execute(statement)
        if getattr(result, "rowcount", 0) == 0:
            self._deny(uow, collection, "delete", caller, record_id)
            raise RecordNotFound
        # Relations have no foreign keys (see docs/collections.md): clear them here.
        for referrer, field in self.catalog.referrers(collection.name):
            column = referrer.table.c[field]
            await uow.db.execute(sa.update(referrer.table).where(column == record_id).values({field: None}))
        self._audit(uow, EventTag.RECORD_DELETE, collection, "delete", caller, record_id)

    async def list(
        self, uow: UnitOfWork, name: str, caller: Principal | None, query: Sequence[tuple[str, str]]
    ) -> Page:
        collection = await self.collection(name)
        verdict = await self._admit(uow, collection, "list", caller, record_id=None)
        params = _parse_query(collection, query)
        table = collection.table
        conditions: list[Any] = []
        if verdict is Verdict.OWN_RECORDS and caller is not None:
            conditions.append(table.c.owner == caller.user_id)
        for key, value in params.model_dump(exclude={"limit", "cursor", "sort"}, exclude_none=True).items():
            field_name, op = key.rsplit("__", 1)
            conditions.append(self._filter(collection, field_name, op, value))
        sort = params.sort or "id"  # type: ignore[attr-defined]
        key = sort.removeprefix("-")
        descending = sort.startswith("-")
        if params.cursor is not None:  # type: ignore[attr-defined]
            conditions.append(_after(collection, key, descending, _decode_cursor(collection, sort, params.cursor)))  # type: ignore[attr-defined]
        limit: int = params.limit  # type: ignore[attr-defined]
        statement = sa.select(table).where(*conditions).order_by(*_order(table, key, descending)).limit(limit + 1)
        rows = (await uow.db.execute(statement)).mappings().all()
        items = [self._present_checked(uow, collection, caller, row) for row in rows[:limit]]
        cursor = _encode_cursor(sort, rows[limit - 1], key) if len(rows) > limit else None
        return Page(items, cursor)

    # --- access ---------------------------------------------------------

    async def _admit(
        self,
        uow: UnitOfWork,
        collection: Collection,
        op: RecordOp,
        caller: Principal | None,
        *,
        record_id: uuid.UUID | None,
    ) -> Verdict:
        verdict = collection.decide(op, caller)
        if verdict is Verdict.UNAUTHENTICATED:
            self._deny(uow, collection, op, caller, record_id)
            raise Unauthorized(headers={"WWW-Authenticate": "Bearer"})
        if verdict is Verdict.DENY:
            self._deny(uow, collection, op, caller, record_id)
            # Whether a record exists is itself data: the same 404 as for none.
            raise RecordNotFound if record_id is not None else RecordsForbidden
        return verdict

    async def _fetch(
        self, uow: UnitOfWork, collection: Collection, op: RecordOp, caller: Principal | None, record_id: uuid.UUID
    ) -> Mapping[Any, Any]:
        verdict = await self._admit(uow, collection, op, caller, record_id=record_id)
        own = verdict is Verdict.OWN_RECORDS and caller is not None
        statement = collection.fetch_own if own else collection.fetch_any
        parameters = {"id": record_id, "owner": caller.user_id if own and caller else None}
        row: Mapping[Any, Any] | None = (await uow.db.execute(statement, parameters)).mappings().first()
        if row is None:
            self._deny(uow, collection, op, caller, record_id)
            raise RecordNotFound
        return row

    async def _check_relations(
        self, uow: UnitOfWork, collection: Collection, caller: Principal | None, values: Mapping[Any, Any]
    ) -> None:
        """A relation may only point at a record the caller can read, so it cannot probe others'."""
        for name, value in values.items():
            kind = collection.fields[name]
            if kind.type != "relation" or value is None:
                continue
            target = self.catalog.collections[str(kind.collection)]
            verdict = target.decide("read", caller)
            statement = sa.select(target.table.c.id).where(target.table.c.id == value)
            if verdict is Verdict.OWN_RECORDS and caller is not None:
                statement = statement.where(target.table.c.owner == caller.user_id)
            if verdict not in (Verdict.ALLOW, Verdict.OWN_RECORDS) or await uow.db.scalar(statement) is None:
                raise InvalidRecord.at(f"/{name}", "There is no such record.")

    def _deny(
        self,
        uow: UnitOfWork,
        collection: Collection,
        op: RecordOp,
        caller: Principal | None,
        record_id: uuid.UUID | None,
    ) -> None:
        self._audit(uow, EventTag.RECORD_DENIED, collection, op, caller, record_id, outcome=Outcome.DENIED)

    def _audit(  # noqa: PLR0917 - private, and every argument is a distinct fact
        self,
        uow: UnitOfWork,
        tag: EventTag,
        collection: Collection,
        op: RecordOp,
        caller: Principal | None,
        record_id: uuid.UUID | None,
        *,
        outcome: Outcome = Outcome.SUCCESS,
    ) -> None:
        details: dict[str, Any] = {"collection": collection.name, "operation": op}
        if record_id is not None:
            details["record_id"] = str(record_id)
        if caller is not None and caller.api_key_id is not None:
            details["api_key_id"] = caller.api_key_id
        record_event(
            uow.db,
            self.clock,
            tag,
            origin=uow.origin,
            outcome=outcome,
            actor_id=caller.user_id if caller else None,
            details=details,
        )

    # --- values ---------------------------------------------------------

    def _to_columns(self, collection: Collection, record_id: uuid.UUID, values: Mapping[Any, Any]) -> Record:
        columns: Record = {}
        for name, value in values.items():
            kind = collection.fields[name]
            if kind.type == "encrypted":
                columns[name] = None if value is None else self.sealer.seal(collection.name, name, record_id, value)
                if kind.searchable:
                    columns[name + BLIND_INDEX_SUFFIX] = (
                        None if value is None else self.sealer.digest(collection.name, name, value)
                    )
            elif kind.type in ("url", "email") and value is not None:
                columns[name] = str(value)
            else:
                columns[name] = value
        return columns

    def _present_checked(
        self,
        uow: UnitOfWork,
        collection: Collection,
        caller: Principal | None,
        row: Mapping[Any, Any],
        plaintext: Mapping[Any, Any] | None = None,
    ) -> Record:
        try:
            return self._present(collection, row, plaintext)
        except InvalidCiphertext:
            log.error("record failed its integrity check", collection=collection.name, record_id=str(row["id"]))
            self._audit(uow, EventTag.RECORD_TAMPERED, collection, "read", caller, row["id"], outcome=Outcome.FAILURE)
            raise CorruptRecord from None

    def _present(
        self, collection: Collection, row: Mapping[Any, Any], plaintext: Mapping[Any, Any] | None = None
    ) -> Record:
        """A row as JSON-ready values; encrypted fields decrypted (InvalidCiphertext if tampered)."""
        record_id: uuid.UUID = row["id"]
        out: Record = {
            "id": str(record_id),
            "owner": str(row["owner"]) if row["owner"] is not None else None,
            "created_at": row["created_at"].isoformat(),
            "updated_at": row["updated_at"].isoformat(),
        }
        for name, kind in collection.fields.items():
            value = row[name]
            if value is None:
                out[name] = None
            elif kind.type == "encrypted":
                known = plaintext.get(name) if plaintext else None
                out[name] = known if known is not None else self.sealer.open(collection.name, name, record_id, value)
            elif kind.type == "datetime":
                out[name] = value.astimezone(dt.UTC).isoformat()
            elif kind.type in ("relation", "url", "email"):
                out[name] = str(value)
            else:
                out[name] = value
        return out

    def _filter(self, collection: Collection, field_name: str, op: str, value: Any) -> Any:
        kind = collection.fields[field_name]
        column = collection.table.c[field_name]
        convert: Callable[[Any], Any] = lambda v: v  # noqa: E731 - the identity
        if kind.type == "encrypted":
            column = collection.table.c[field_name + BLIND_INDEX_SUFFIX]
            convert = lambda v: self.sealer.digest(collection.name, field_name, v)  # noqa: E731
        elif kind.type in ("url", "email"):
            convert = str
        if op == "in":
            return column.in_([convert(v) for v in value])
        if op == "prefix":
            # substr rather than LIKE: the same exact, case-sensitive match on
            # SQLite and PostgreSQL, and no wildcard characters to escape.
            return sa.func.substr(column, 1, len(value)) == value
        value = convert(value)
        operations: dict[str, Callable[[Any, Any], Any]] = {
            "eq": lambda c, v: c == v,
            "ne": lambda c, v: c.is_distinct_from(v),
            "lt": lambda c, v: c < v,
            "lte": lambda c, v: c <= v,
            "gt": lambda c, v: c > v,
            "gte": lambda c, v: c >= v,
        }
        return operations[op](column, value)


# --- parsing ---------------------------------------------------------------


def _parse_body(model: type[BaseModel], body: bytes) -> BaseModel:
    try:
        return model.model_validate_json(body or b"null")
    except ValidationError as exc:
        # Pointers and messages only, never the offending values (DESIGN.md §4).
        raise InvalidRecord(
            extra={"errors": locate([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])}
        ) from None


def _parse_query(collection: Collection, query: Sequence[tuple[str, str]]) -> BaseModel:
    values: dict[str, Any] = {}
    for key, value in query:
        values.setdefault(key, []).append(value)
    model = collection.query_model
    lists = {info.alias or name for name, info in model.model_fields.items() if name.endswith("__in")}
    # A repeated parameter is a list only where a list is declared; elsewhere
    # the list fails validation, so `?limit=1&limit=1000` cannot slip through.
    flat = {key: found if key in lists or len(found) > 1 else found[0] for key, found in values.items()}
    try:
        return model.model_validate(flat)
    except ValidationError as exc:
        raise InvalidQuery(
            extra={"errors": locate([{**e, "loc": ("query", *e["loc"])} for e in exc.errors()])}
        ) from None


def _order(table: sa.Table, key: str, descending: bool) -> list[Any]:
    if key == "id":
        return [table.c.id.desc() if descending else table.c.id.asc()]
    column = table.c[key]
    if descending:
        return [column.desc().nulls_last(), table.c.id.desc()]
    return [column.asc().nulls_first(), table.c.id.asc()]


def _after(collection: Collection, key: str, descending: bool, position: tuple[Any, uuid.UUID]) -> Any:
    """Rows strictly after ``position`` in the order of ``_order`` (keyset pagination)."""
    value, last_id = position
    table = collection.table
    beyond = table.c.id < last_id if descending else table.c.id > last_id
    if key == "id":
        return beyond
    column = table.c[key]
    if descending:  # NULLs come last
        if value is None:
            return sa.and_(column.is_(None), beyond)
        return sa.or_(column < value, sa.and_(column == value, beyond), column.is_(None))
    if value is None:  # NULLs come first
        return sa.or_(sa.and_(column.is_(None), beyond), column.is_not(None))
    return sa.or_(column > value, sa.and_(column == value, beyond))


def _encode_cursor(sort: str, row: Mapping[Any, Any], key: str) -> str:
    value = None if key == "id" else row[key]
    if isinstance(value, dt.datetime):
        value = value.isoformat()
    raw = json.dumps([sort, value, str(row["id"])], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode_cursor(collection: Collection, sort: str, cursor: str) -> tuple[Any, uuid.UUID]:
    """The position a cursor names. Any cursor is only a starting point: the
    rules and filters still apply, so a forged one can reveal nothing."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        cursor_sort, value, last_id = decoded
        if cursor_sort != sort:
            raise ValueError("the cursor belongs to another sort order")
        key = sort.removeprefix("-")
        if key != "id" and value is not None:
            value = TypeAdapter(query_value_type(collection.fields[key])).validate_python(value)
        return (None if key == "id" else value), uuid.UUID(str(last_id))
    except (ValueError, TypeError, binascii.Error, ValidationError):
        raise InvalidQuery.at("cursor", "The cursor is not valid for this query.") from None


# --- applying bastion.toml ---------------------------------------------------


async def apply_collections(
    engine: AsyncEngine,
    desired: dict[str, CollectionSettings],
    *,
    clock: Clock,
    force: bool = False,
    dry_run: bool = False,
) -> Plan:
    """Bring the tables to the collections of bastion.toml; returns the plan.

    Destructive changes (dropping a collection, a field or a field's values)
    raise DestructiveChanges unless ``force``; nothing is applied then.
    """
    async with engine.begin() as connection:
        applied = await connection.run_sync(read_definitions)
        owners = await connection.run_sync(sources)
        clash = sorted(name for name in desired if owners.get(name, "config") != "config")
        if clash:
            raise ConfigError(f"collections {', '.join(clash)} were defined through the admin API; rename them")
        check_relations({**{k: v for k, v in applied.items() if owners[k] != "config"}, **desired})
        current = {name: definition for name, definition in applied.items() if owners[name] == "config"}
        changes = plan(current, desired)
        if dry_run or changes.empty:
            return changes
        if changes.destructive and not force:
            raise DestructiveChanges(changes.destructive)
        await connection.run_sync(lambda c: run_plan(c, changes, source="config", now=clock.now()))
        async with AsyncSession(bind=connection) as db:
            _audit_plan(db, clock, changes, Origin.cli(), None)
            await db.commit()  # writes the event; the connection's transaction commits it
    return changes


def apply_configured(settings: Settings, clock: Clock, *, force: bool = False, dry_run: bool = False) -> Plan:
    """``apply_collections`` for synchronous callers (the CLI, ``bastion migrate``)."""

    async def run() -> Plan:
        engine = create_engine(settings.sqlalchemy_url)
        try:
            return await apply_collections(
                engine, dict(settings.collections), clock=clock, force=force, dry_run=dry_run
            )
        finally:
            await engine.dispose()

    # Its own thread and loop, so it also works under a running loop (tests, embedding apps).
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def _audit_plan(db: AsyncSession, clock: Clock, changes: Plan, origin: Origin, actor_id: uuid.UUID | None) -> None:
    if changes.empty:
        return
    record_event(
        db,
        clock,
        EventTag.COLLECTIONS_CHANGE,
        origin=origin,
        actor_id=actor_id,
        details={"changes": [change.description for change in changes.changes]},
    )
