"""SQLAlchemy Core statements, compiled once per dialect and run on the driver.

SQL is written once, as SQLAlchemy Core over the declared tables; what runs
is the string SQLAlchemy compiles for the dialect (``?`` placeholders for
SQLite's ``sqlite3``, ``$n`` for asyncpg), with every value a bound
parameter. Compiling costs far more than running a short statement, so each
statement is compiled once per dialect and set of parameter names, and what
SQLAlchemy would do around the driver call is precomputed too: which
parameter goes in which position, the column types' conversions both ways
(UUIDs, UTC datetimes, JSON; the same dialect-adapted conversions SQLAlchemy
itself applies, through its ``_cached_*_processor``), Python-side column
defaults, and the row class of the result.

A statement that is built per call (a list's filters) is best built from a
shape with named ``bindparam`` s and kept, so it too compiles once; any other
statement also works, compiled on first use and kept in a bounded cache.
"""

from __future__ import annotations

import json
from collections import OrderedDict, namedtuple
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ClauseElement

if TYPE_CHECKING:
    from sqlalchemy.sql.compiler import SQLCompiler

Convert = Callable[[Any], Any]
T = TypeVar("T", bound="Compiled | _ByNames")
# How many distinct compiled statements a process keeps (the prebuilt ones are
# a few dozen; the rest are the shapes of lists and the admin's one-offs).
CACHE_SIZE = 2048


class Compiled:
    """One statement as one dialect runs it."""

    __slots__ = ("_binds", "_compiled", "_defaults", "_processors", "_results", "_row", "columns", "sql", "statement")

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: tuple[str, ...] | None) -> None:
        compiled = cast(
            "SQLCompiler",
            statement.compile(
                dialect=dialect,
                column_keys=list(keys) if keys is not None else None,
            ),
        )
        self.statement = statement  # held, so that the cache's id() key stays this statement's
        self.sql: str = compiled.string
        # (parameter name, default value or _REQUIRED, the type's bind conversion)
        self._binds: list[tuple[str, Any, Convert | None]] = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            default = _REQUIRED if bind.required or bind.callable else bind.value
            self._binds.append((name, default, bind.type._cached_bind_processor(dialect)))
        # An IN over a list is rendered per call, as SQLAlchemy itself does, one
        # bound parameter per value (its post-compile step, kept for these only).
        expanding = any(bind.expanding for bind in compiled.binds.values())
        self._compiled = compiled if expanding else None
        self._processors = {name: convert for name, _, convert in self._binds if convert is not None}
        # Columns whose default Python computes (an INSERT's ``default=``, an UPDATE's ``onupdate=``).
        self._defaults: list[tuple[str, Callable[[], Any]]] = [
            (column.key, _default_of(column)) for column in (*compiled.insert_prefetch, *compiled.update_prefetch)
        ]
        if isinstance(statement, sa.Select):
            selected = list(statement.selected_columns)
        elif isinstance(statement, sa.Insert | sa.Update | sa.Delete) and statement._returning:
            selected = list(statement.exported_columns)
        else:
            selected = []  # a text() statement: its rows are handed on as the driver made them
        self.columns: tuple[str, ...] = tuple(column.key or f"column_{i}" for i, column in enumerate(selected))
        self._results: list[Convert | None] = [
            column.type._cached_result_processor(dialect, _type_code(column.type)) for column in selected
        ]
        self._row: Callable[..., Any] = namedtuple("Row", self.columns, rename=True) if self.columns else tuple

    def bind(self, values: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
        """The SQL and its positional parameters for ``values`` (by name), converted for the driver."""
        given: Mapping[str, Any] = values or {}
        if self._defaults:
            given = {**{key: make() for key, make in self._defaults if key not in given}, **given}
        if self._compiled is not None:
            return self._expand(given)
        out = []
        for name, default, convert in self._binds:
            value = given.get(name, default)
            if value is _REQUIRED:
                raise sa.exc.ArgumentError(f"a value is required for the parameter {name!r}")
            out.append(convert(value) if convert is not None and value is not None else value)
        return self.sql, out

    def _expand(self, given: Mapping[str, Any]) -> tuple[str, list[Any]]:
        compiled = self._compiled
        assert compiled is not None  # noqa: S101
        expanded = compiled._process_parameters_for_postcompile(compiled.construct_params(dict(given)))
        convert = {**self._processors, **expanded.processors}
        out = []
        for name in expanded.positiontup or ():
            value = expanded.parameters[name]
            process = convert.get(name)
            out.append(process(value) if process is not None and value is not None else value)
        return expanded.statement, out

    def row(self, raw: Iterable[Any]) -> Any:
        """A driver row as a named tuple (attribute access, ``_asdict()``)."""
        if not self._results:
            return tuple(raw)
        return self._row(
            *(value if convert is None else convert(value) for convert, value in zip(self._results, raw, strict=True))
        )

    def rows(self, raw: Iterable[Sequence[Any]]) -> list[Any]:
        return [self.row(values) for values in raw]


# PostgreSQL's type codes of float8 and numeric: what a result's column of a
# Float or Numeric column will say. asyncpg's numeric types choose their
# conversion by it, and a statement compiled ahead of any result must name it.
_FLOAT8, _NUMERIC = 701, 1700


def _type_code(kind: Any) -> int | None:
    if isinstance(kind, sa.Float):
        return _FLOAT8
    if isinstance(kind, sa.Numeric):
        return _NUMERIC
    return None


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


_REQUIRED = _Required()


def _default_of(column: sa.Column[Any]) -> Callable[[], Any]:
    default = column.default if column.default is not None else column.onupdate
    if default is None or not isinstance(default, sa.ColumnDefault):
        raise sa.exc.ArgumentError(f"column {column.key!r} has a default that only SQLAlchemy's executor can run")
    if default.is_callable:
        return lambda: default.arg(None)
    value = default.arg
    return lambda: value


def json_text(value: Any) -> str:
    """JSON columns' text: orjson, or the standard library for what orjson refuses
    (integers past 64 bits). Read back by the standard library, which keeps them."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))


class Statements:
    """The compiled statements of one dialect (one per database)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        # By id(statement); an INSERT or UPDATE whose columns come from the values
        # is kept once per tuple of value names, under (id, names).
        self._cache: OrderedDict[Hashable, Compiled | _ByNames] = OrderedDict()

    def compiled(self, statement: ClauseElement, values: Mapping[str, Any] | None = None) -> Compiled:
        """``statement`` compiled for this dialect; an INSERT or UPDATE without
        ``.values()`` takes its columns from the names in ``values``."""
        found = self._cache.get(id(statement))
        if found is not None and found.statement is statement:
            if isinstance(found, Compiled):
                return found
            named = self._cache.get((id(statement), tuple(values or ())))
            if named is not None and named.statement is statement:
                return cast(Compiled, named)
        keys = _column_keys(statement, values)
        if keys is None:
            return self._keep(id(statement), Compiled(statement, self.dialect, None))
        self._keep(id(statement), _ByNames(statement))
        return self._keep((id(statement), tuple(values or ())), Compiled(statement, self.dialect, keys))

    def _keep(self, key: Hashable, entry: T) -> T:
        self._cache[key] = entry
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return entry


class _ByNames:
    """The cache's note that a statement's SQL depends on the names of its values."""

    __slots__ = ("statement",)

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement


def _column_keys(statement: ClauseElement, values: Mapping[str, Any] | None) -> tuple[str, ...] | None:
    if values is None or not isinstance(statement, sa.Insert | sa.Update):
        return None
    if statement._values or getattr(statement, "_multi_values", None):
        return None
    table = statement.table
    return tuple(sorted(key for key in values if key in table.c))
