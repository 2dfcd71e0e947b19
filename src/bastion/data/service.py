"""Records: create, read, update, delete and list, under each collection's rules.

Every operation decides access before touching a row, and a record the caller
may not see is answered exactly like one that does not exist (ASVS V8.2.2).
Every refusal is an audit event; so is every change, in the same transaction
as the change. Queries are SQLAlchemy Core over the collection's table with
bound parameters, built once per collection (or per list shape) in
``bastion.data.schema`` and run through ``bastion.db``; the only names that
reach SQL are declared field names. Schema changes (collections defined or
applied) run as SQLAlchemy operations in ``Database.run_sync``, their audit
event in the same transaction as the DDL.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import sqlite3
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy import Connection

from bastion.audit import EventTag, Origin, Outcome, record_event
from bastion.clock import Clock
from bastion.data.errors import (
    CollectionChangeRefused,
    CollectionNotFound,
    CorruptRecord,
    DataLossRefused,
    DestructiveChanges,
    InvalidQuery,
    InvalidRecord,
    RecordNotFound,
    RecordsForbidden,
)
from bastion.data.schema import Catalog, Collection, ListShape, Verdict, check_relations, in_size, new_record_id
from bastion.data.sealing import FieldSealer
from bastion.data.tables import (
    BLIND_INDEX_SUFFIX,
    DEFINITIONS_SELECT,
    Plan,
    parse_definitions,
    plan,
    raw_definitions,
    read_definitions,
    run_plan,
    sources,
)
from bastion.data.userkeys import OwnerGone, owner_exists, write_owned
from bastion.data.validation import query_value_type, unknown_parameter
from bastion.db import Database, DatabaseUnavailable, Transaction, open_database
from bastion.db.database import Queries
from bastion.http.handlers import locate
from bastion.http.problems import NotReady, Unauthorized
from bastion.logging import get_logger
from bastion.security import DataKey, InvalidCiphertext, token_bytes
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
# What a failed catalog look means "the database is not serving now".
_UNAVAILABLE = (DatabaseUnavailable, sqlite3.Error, OSError)

Record = dict[str, Any]
Records = list[Record]


@dataclass(frozen=True)
class Page:
    items: list[Record]
    next_cursor: str | None


class DataService:
    def __init__(self, *, clock: Clock, db: Database, sealer: FieldSealer) -> None:
        self.clock = clock
        self.db = db
        self.sealer = sealer
        self.catalog = Catalog({})
        self._raw: dict[str, Any] | None = None
        self._loaded_at = float("-inf")

    # --- the catalog ----------------------------------------------------

    async def refresh(self) -> None:
        """Look at the applied collection definitions; the catalog is rebuilt only
        when they differ from the ones it was built from.

        One small select on the database's reader (a row per collection); the
        definitions are compared as the JSON they are stored as, so validating
        them and building the catalog happen only after a change.
        """
        raw = raw_definitions(await self.db.all(DEFINITIONS_SELECT))
        if raw != self._raw:
            self.catalog = Catalog.build(parse_definitions(raw), self.catalog.version + 1)
            self._raw = raw
        self._loaded_at = time.monotonic()

    async def start(self) -> None:
        """Load the catalog at start-up; with the database down (or not migrated yet),
        start anyway (``/readyz`` says 503) and load it on the first request that needs it."""
        try:
            await self.refresh()
        except Exception as exc:  # noqa: BLE001 - any driver's error: logged, retried on the first request
            log.warning("collections not loaded", error=type(exc).__name__)

    async def collection(self, name: str) -> Collection:
        """The collection as currently applied, at most CATALOG_RELOAD_SECONDS old."""
        if time.monotonic() - self._loaded_at > CATALOG_RELOAD_SECONDS:
            self._loaded_at = time.monotonic()  # before the await: one look, not one per waiting request
            try:
                await self.refresh()
            except _UNAVAILABLE:
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
        Raises DataLossRefused when the change drops data and ``force`` is
        false, and CollectionChangeRefused when it clashes with bastion.toml
        or with other collections.
        """

        def change(connection: Connection) -> Plan:
            current = read_definitions(connection)
            owners = sources(connection)
            if definition is None and name not in current:
                raise CollectionNotFound
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
                raise DataLossRefused([c.description for c in changes.destructive])
            run_plan(connection, changes, source="api", now=self.clock.now())
            _audit_plan(connection, self.clock, changes, origin, actor_id)
            return changes

        changes = await self.db.run_sync(change)
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
        owner = caller.user_id if caller else None
        key = await self._key_for_writing(uow, collection, owner, values)
        row = {
            "id": record_id,
            "owner": owner,
            "created_at": now,
            "updated_at": now,
            **self._to_columns(collection, record_id, values, key),
        }
        await write_owned(uow.db, collection.insert, row)
        self._audit(uow, EventTag.RECORD_CREATE, collection, "create", caller, record_id)
        presenter = collection.presenter
        return presenter(presenter.row(row), self.sealer, plaintext=values)

    async def read(self, uow: UnitOfWork, name: str, caller: Principal | None, record_id: uuid.UUID) -> Record:
        collection = await self.collection(name)
        row = await self._fetch(uow, collection, "read", caller, record_id)
        keys = await self._keys_for_reading(uow.db, collection, [row])
        return self._present_checked(uow, collection, caller, row, keys=keys)

    async def update(
        self, uow: UnitOfWork, name: str, caller: Principal | None, record_id: uuid.UUID, body: bytes
    ) -> Record:
        collection = await self.collection(name)
        row = (await self._fetch(uow, collection, "update", caller, record_id))._asdict()
        data = _parse_body(collection.update_model, body)
        values = data.model_dump(include=data.model_fields_set)
        await self._check_relations(uow, collection, caller, values)
        # Sealed with the record's owner's key, whoever writes it (an admin editing a user's record too).
        owner = None if row["owner"] is None else uuid.UUID(str(row["owner"]))
        key = await self._key_for_writing(uow, collection, owner, values)
        changes = {"updated_at": self.clock.now(), **self._to_columns(collection, record_id, values, key)}
        if await uow.db.execute(collection.update, {"_record_id": record_id, **changes}) == 0:
            # Deleted since it was read: with its owner, by an erasure (OwnerGone, as the
            # encrypted path answers), or alone (as if it had never been there).
            if owner is not None and not await owner_exists(uow.db, owner):
                raise OwnerGone
            raise RecordNotFound
        self._audit(uow, EventTag.RECORD_UPDATE, collection, "update", caller, record_id)
        merged = collection.presenter.row({**row, **changes})
        keys = await self._keys_for_reading(uow.db, collection, [merged])
        return self._present_checked(uow, collection, caller, merged, plaintext=values, keys=keys)

    async def delete(self, uow: UnitOfWork, name: str, caller: Principal | None, record_id: uuid.UUID) -> None:
        collection = await self.collection(name)
        verdict = await self._admit(uow, collection, "delete", caller, record_id=record_id)
        if verdict is Verdict.OWN_RECORDS and caller is not None:
            deleted = await uow.db.execute(collection.delete_own, {"id": record_id, "owner": caller.user_id})
        else:
            deleted = await uow.db.execute(collection.delete_any, {"id": record_id})
        if deleted == 0:
            self._deny(uow, collection, "delete", caller, record_id)
            raise RecordNotFound
        # Relations have no foreign keys (see docs/collections.md): clear them here.
        for referrer, field in self.catalog.referrers(collection.name):
            await uow.db.execute(referrer.clear_relations[field], {"_target": record_id})
        self._audit(uow, EventTag.RECORD_DELETE, collection, "delete", caller, record_id)

    async def list(
        self, uow: UnitOfWork, name: str, caller: Principal | None, query: Sequence[tuple[str, str]]
    ) -> Page:
        collection = await self.collection(name)
        verdict = await self._admit(uow, collection, "list", caller, record_id=None)
        params = _parse_query(collection, query)
        limit: int = params.limit  # type: ignore[attr-defined]
        bound: dict[str, Any] = {"limit": limit + 1}
        own = verdict is Verdict.OWN_RECORDS and caller is not None
        if own and caller is not None:
            bound["owner"] = caller.user_id
        filters: list[tuple[str, str, int]] = []
        for key, value in params.model_dump(exclude={"limit", "cursor", "sort"}, exclude_none=True).items():
            field_name, op = key.rsplit("__", 1)
            filters.append((field_name, op, self._bind_filter(collection, len(filters), field_name, op, value, bound)))
        sort = params.sort or "id"  # type: ignore[attr-defined]
        key = sort.removeprefix("-")
        cursor: str | None = None
        if params.cursor is not None:  # type: ignore[attr-defined]
            value, bound["c_id"] = _decode_cursor(collection, sort, params.cursor)  # type: ignore[attr-defined]
            cursor = "value" if key == "id" or value is not None else "null"
            if cursor == "value" and key != "id":
                bound["c_value"] = value
        statement = collection.list_statement(ListShape(own, tuple(filters), sort, cursor))
        rows = await uow.db.all(statement, bound)
        keys = await self._keys_for_reading(uow.db, collection, rows[:limit])
        items = [self._present_checked(uow, collection, caller, row, keys=keys) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = _encode_cursor(sort, None if key == "id" else getattr(last, key), last.id)
        return Page(items, next_cursor)

    # --- one owner's records (export, erasure) ----------------------------

    async def records_of_owner(self, user_id: uuid.UUID, db: Queries | None = None) -> dict[str, Records]:
        """Every record ``user_id`` owns, decrypted, by collection (every collection named,
        in name order, an empty list where they own none), each in id (creation) order.

        For the export (GDPR art. 15, 20): read in ``db`` (the export's transaction,
        so the records and the rest of the document are one read) or, without it,
        one snapshot per collection on the reader; without rules (the caller decides
        who may export). Raises CorruptRecord if a sealed value fails its integrity check.
        """
        await self.refresh()
        reader = db if db is not None else self.db
        out: dict[str, Records] = {}
        for name, collection in sorted(self.catalog.collections.items()):
            rows = await reader.all(collection.of_owner, {"owner": user_id})
            keys = await self._keys_for_reading(reader, collection, rows)
            try:
                out[name] = [collection.presenter(row, self.sealer, keys=keys) for row in rows]
            except InvalidCiphertext:
                log.error("record failed its integrity check", collection=name, owner=str(user_id))
                raise CorruptRecord from None
        return out

    async def erase_owner(self, tx: Transaction, user_id: uuid.UUID) -> dict[str, int]:
        """Delete every record ``user_id`` owns, in every collection, and destroy their data key
        (in ``tx``; call ``sealer.user_keys.forget(user_id)`` again once it commits).

        The key goes first: on PostgreSQL its delete waits for any record
        write still using it (``UserKeys.for_writing`` reads it FOR SHARE), so
        the record deletes that follow see those records too. Relations of
        other users' records into theirs are cleared, as a delete does.
        Returns the records deleted per collection (those with any).
        """
        await self.refresh()
        await self.sealer.user_keys.destroy(tx, user_id)
        deleted: dict[str, int] = {}
        for name, collection in sorted(self.catalog.collections.items()):
            for referrer, _ in self.catalog.referrers(name):
                for statement in referrer.clear_relations_to_owner(collection).values():
                    await tx.execute(statement, {"owner": user_id})
        for name, collection in sorted(self.catalog.collections.items()):
            count = await tx.execute(collection.delete_of_owner, {"owner": user_id})
            if count:
                deleted[name] = count
        return deleted

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
    ) -> Any:
        """The row (a named tuple in the table's column order), if ``caller`` may ``op`` it."""
        verdict = await self._admit(uow, collection, op, caller, record_id=record_id)
        if verdict is Verdict.OWN_RECORDS and caller is not None:
            row = await uow.db.one(collection.fetch_own, {"id": record_id, "owner": caller.user_id})
        else:
            row = await uow.db.one(collection.fetch_any, {"id": record_id})
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
            if verdict is Verdict.OWN_RECORDS and caller is not None:
                found = await uow.db.value(target.exists_own, {"id": value, "owner": caller.user_id})
            elif verdict is Verdict.ALLOW:
                found = await uow.db.value(target.exists_any, {"id": value})
            else:
                found = None
            if found is None:
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

    async def _key_for_writing(
        self, uow: UnitOfWork, collection: Collection, owner: uuid.UUID | None, values: Mapping[str, Any]
    ) -> DataKey | None:
        """The owner's data key if ``values`` hold a value to seal (None: no owner, or nothing to seal)."""
        if owner is None or not any(
            value is not None and collection.fields[name].type == "encrypted" for name, value in values.items()
        ):
            return None
        # OwnerGone (401) if the account was erased while this request ran.
        return await self.sealer.user_keys.for_writing(uow.db, owner, self.clock.now())

    async def _keys_for_reading(
        self, db: Queries, collection: Collection, rows: Sequence[Sequence[Any]]
    ) -> dict[str, DataKey]:
        """The data keys of the owners of ``rows``, by owner id (text), when the collection seals anything."""
        if not collection.has_sealed_fields:
            return {}
        owners = {uuid.UUID(str(row[1])) for row in rows if row[1] is not None}
        if not owners:
            return {}
        found = await self.sealer.user_keys.for_reading(db, owners)
        return {str(owner): key for owner, key in found.items()}

    def _to_columns(
        self, collection: Collection, record_id: uuid.UUID, values: Mapping[Any, Any], key: DataKey | None = None
    ) -> Record:
        columns: Record = {}
        for name, value in values.items():
            kind = collection.fields[name]
            if kind.type == "encrypted":
                columns[name] = (
                    None if value is None else self.sealer.seal(collection.name, name, record_id, value, key)
                )
                if kind.searchable:
                    columns[name + BLIND_INDEX_SUFFIX] = (
                        None if value is None else self.sealer.digest(collection.name, name, value)
                    )
            elif kind.type in ("url", "email") and value is not None:
                columns[name] = str(value)
            else:
                columns[name] = value
        return columns

    def _present_checked(  # noqa: PLR0917 - private, and every argument is a distinct fact
        self,
        uow: UnitOfWork,
        collection: Collection,
        caller: Principal | None,
        row: Sequence[Any],
        plaintext: Mapping[str, Any] | None = None,
        keys: Mapping[str, DataKey] | None = None,
    ) -> Record:
        """``row`` (in the table's column order) as the API shows it; a tampered value is a 500 and an event."""
        try:
            return collection.presenter(row, self.sealer, plaintext, keys)
        except InvalidCiphertext:
            log.error("record failed its integrity check", collection=collection.name, record_id=str(row[0]))
            self._audit(uow, EventTag.RECORD_TAMPERED, collection, "read", caller, row[0], outcome=Outcome.FAILURE)
            raise CorruptRecord from None

    def _bind_filter(  # noqa: PLR0917 - private, and every argument is a distinct fact
        self, collection: Collection, i: int, field_name: str, op: str, value: Any, bound: dict[str, Any]
    ) -> int:
        """Put filter ``i``'s values into ``bound`` (as ``Collection.list_statement`` names them);
        returns how many values its statement takes."""
        kind = collection.fields[field_name]

        def convert(v: Any) -> Any:
            if kind.type == "encrypted":
                return self.sealer.digest(collection.name, field_name, v)
            return str(v) if kind.type in {"url", "email"} else v

        if op == "in":
            values = [convert(v) for v in value]
            size = in_size(len(values))
            values += [values[-1]] * (size - len(values))  # `x IN (a, b, b)` is `x IN (a, b)`
            bound.update((f"f{i}_{j}", v) for j, v in enumerate(values))
            return size
        if op == "prefix":
            bound[f"f{i}"], bound[f"f{i}_len"] = value, len(value)
            return 1
        bound[f"f{i}"] = convert(value)
        return 1


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
        errors: list[dict[str, Any]] = []
        for error in exc.errors():
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                message = unknown_parameter(collection.settings, str(error["loc"][0]))
            errors.append({**error, "loc": ("query", *error["loc"]), "msg": message})
        raise InvalidQuery(extra={"errors": locate(errors)}) from None


def _encode_cursor(sort: str, value: Any, last_id: uuid.UUID) -> str:
    if isinstance(value, dt.datetime):
        value = value.isoformat()
    raw = json.dumps([sort, value, str(last_id)], separators=(",", ":")).encode()
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
    db: Database,
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

    def apply(connection: Connection) -> Plan:
        applied = read_definitions(connection)
        owners = sources(connection)
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
        run_plan(connection, changes, source="config", now=clock.now())
        _audit_plan(connection, clock, changes, Origin.cli(), None)
        return changes

    return await db.run_sync(apply)


def apply_configured(settings: Settings, clock: Clock, *, force: bool = False, dry_run: bool = False) -> Plan:
    """``apply_collections`` for synchronous callers (the CLI, ``bastion migrate``)."""

    async def run() -> Plan:
        db = open_database(settings.sqlalchemy_url)
        try:
            return await apply_collections(db, dict(settings.collections), clock=clock, force=force, dry_run=dry_run)
        finally:
            await db.close()

    # Its own thread and loop, so it also works under a running loop (tests, embedding apps).
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


class _RightAway:
    """``record_event``'s transaction for schema work: the event is inserted at
    once, on the SQLAlchemy connection that runs the DDL, so it commits (or
    rolls back) with the change it describes."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def defer(self, statement: Any, row: Mapping[str, Any]) -> None:
        self.connection.execute(statement, dict(row))


def _audit_plan(
    connection: Connection, clock: Clock, changes: Plan, origin: Origin, actor_id: uuid.UUID | None
) -> None:
    if changes.empty:
        return
    record_event(
        cast("Transaction", _RightAway(connection)),  # record_event only defers on it
        clock,
        EventTag.COLLECTIONS_CHANGE,
        origin=origin,
        actor_id=actor_id,
        details={"changes": [change.description for change in changes.changes]},
    )
