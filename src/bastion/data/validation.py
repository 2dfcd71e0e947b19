"""Validation of record bodies and list queries: pydantic models built per collection.

Bodies are validated strictly from the raw JSON (no coercion: ``"3"`` is not
an integer), with ``extra="forbid"`` so a client can never set a field the
collection does not declare, nor the server-owned ``id``, ``owner``,
``created_at`` and ``updated_at`` (ASVS V15.3.3). List queries arrive as text,
so their values are parsed (lax), but only the parameters declared for the
collection exist: anything else is a 422, never a raw expression.

Rich text is sanitized with nh3 (the Ammonia HTML sanitizer) against an
allowlist of tags, attributes and URL schemes (ASVS V1.3.1).
"""

from __future__ import annotations

import json
import unicodedata
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

import nh3
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    JsonValue,
    Strict,
    StringConstraints,
    UrlConstraints,
    create_model,
)

from bastion.clock import in_utc
from bastion.settings import CollectionSettings, FieldSettings

# JSON numbers beyond 2**53 lose precision in JavaScript clients, and 64-bit
# columns overflow beyond 2**63: bound integers to what every side agrees on.
MAX_SAFE_INTEGER = 2**53 - 1
DEFAULT_MAX_LENGTH = {"string": 255, "text": 10_000, "richtext": 100_000, "encrypted": 4096, "url": 2048}
# A b-tree entry must fit in a PostgreSQL index page (about 2.7 kB): at most
# 4 bytes a character, this many characters always fit.
MAX_INDEXED_LENGTH = 512
MAX_IN_VALUES = 50
PAGE_SIZE, MAX_PAGE_SIZE = 20, 100

OPERATORS: dict[str, tuple[str, ...]] = {
    "string": ("eq", "ne", "in", "prefix"),
    "email": ("eq", "ne", "in", "prefix"),
    "url": ("eq", "ne", "in", "prefix"),
    "enum": ("eq", "ne", "in"),
    "integer": ("eq", "ne", "lt", "lte", "gt", "gte", "in"),
    "number": ("eq", "ne", "lt", "lte", "gt", "gte", "in"),
    "datetime": ("eq", "ne", "lt", "lte", "gt", "gte", "in"),
    "boolean": ("eq", "ne"),
    "relation": ("eq", "ne", "in"),
    "encrypted": ("eq", "in"),  # through the blind index: equality only
}

RICHTEXT_TAGS = frozenset(
    {"a", "b", "blockquote", "br", "code", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "li", "ol", "p", "pre"}
    | {"s", "strong", "sub", "sup", "u", "ul"}
)
RICHTEXT_ATTRIBUTES = {"a": {"href", "title"}}
RICHTEXT_SCHEMES = frozenset({"http", "https", "mailto"})
# What a browser's URL parser ignores before reading a link (WHATWG URL:
# leading and trailing C0 controls and spaces; tabs and newlines anywhere).
_URL_TRIM = "".join(chr(code) for code in range(0x21))
_URL_DROP = str.maketrans("", "", "\t\n\r")


def sanitize_html(value: str) -> str:
    """Keep only allowlisted markup; links get ``rel="noopener noreferrer nofollow"``."""
    return nh3.clean(
        value,
        tags=set(RICHTEXT_TAGS),
        attributes={tag: set(names) for tag, names in RICHTEXT_ATTRIBUTES.items()},
        attribute_filter=_relative_links_stay_here,
        url_schemes=set(RICHTEXT_SCHEMES),
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def _relative_links_stay_here(tag: str, attribute: str, value: str) -> str | None:
    r"""Drop a link that has no scheme yet leaves this host.

    nh3 checks the scheme of absolute URLs against the allowlist and lets
    relative ones through, but ``//host``, ``\\host``, ``/\host`` and the like
    are protocol-relative: a browser reads them as another host's address
    (it treats ``\`` as ``/`` in http(s) URLs and skips the characters in
    ``_URL_TRIM``/``_URL_DROP``). nh3 hands this filter the decoded value, so
    character references cannot hide the slashes.
    """
    if attribute != "href":
        return value
    seen = value.strip(_URL_TRIM).translate(_URL_DROP)
    if seen[:2].replace("\\", "/") == "//":
        return None
    return value


# What _no_controls refuses, said in the document too (as a pattern, so that clients and
# fuzzers know it): Unicode category Cc is U+0000-U+001F and U+007F-U+009F.
_NO_CONTROLS = Field(json_schema_extra={"allOf": [{"pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$"}]})
_NO_CONTROLS_BUT_LINES = Field(
    json_schema_extra={"allOf": [{"pattern": "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*$"}]}
)


def _no_controls(allowed: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        # Control characters have no business in text fields and hide in logs,
        # terminals and CSV exports.
        if any(unicodedata.category(char) == "Cc" and char not in allowed for char in value):
            raise ValueError("control characters are not allowed")
        return value

    return check


def _sanitized_within(limit: int) -> Callable[[str], str]:
    def sanitize(value: str) -> str:
        clean = sanitize_html(value)
        if len(clean) > limit:
            raise ValueError(f"longer than {limit} characters once sanitized (markup characters are escaped)")
        return clean

    return sanitize


def _json_bounded(max_bytes: int, max_depth: int) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if len(json.dumps(value, separators=(",", ":"))) > max_bytes:
            raise ValueError(f"larger than {max_bytes} bytes")
        if _depth(value) > max_depth:
            raise ValueError(f"nested deeper than {max_depth} levels")
        return value

    return check


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def max_length(field: FieldSettings) -> int:
    default = DEFAULT_MAX_LENGTH.get(field.type, 255)
    if field.filterable or field.sortable:
        default = min(default, MAX_INDEXED_LENGTH)
    return field.max_length or default


def body_type(field: FieldSettings) -> Any:
    """The strict pydantic type of a field in a request body."""
    if field.type in ("string", "encrypted"):
        return Annotated[
            str,
            Strict(),
            StringConstraints(min_length=field.min_length, max_length=max_length(field), pattern=field.pattern),
            AfterValidator(_no_controls("")),
            _NO_CONTROLS,
        ]
    if field.type == "text":
        return Annotated[
            str,
            Strict(),
            StringConstraints(min_length=field.min_length, max_length=max_length(field)),
            AfterValidator(_no_controls("\t\n\r")),
            _NO_CONTROLS_BUT_LINES,
        ]
    if field.type == "richtext":
        # The length bound applies before sanitizing, so it also bounds its
        # cost, and again after: escaping grows text ("<" is stored as "&lt;").
        return Annotated[
            str,
            Strict(),
            StringConstraints(max_length=max_length(field)),
            AfterValidator(_no_controls("\t\n\r")),
            _NO_CONTROLS_BUT_LINES,
            AfterValidator(_sanitized_within(max_length(field))),
        ]
    if field.type == "json":
        return Annotated[JsonValue, AfterValidator(_json_bounded(field.max_bytes or 16_384, field.max_depth or 8))]
    return _scalar_type(field, strict=True)


def _whole_number(value: Any) -> Any:
    """5.0 is the integer 5, as JSON Schema has it (the document says "type: integer"); 5.5,
    "5" and true stay refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _scalar_type(field: FieldSettings, *, strict: bool) -> Any:  # noqa: PLR0911 - one branch per field type
    """Types shared by bodies (strict) and query values (parsed from text)."""
    strictness = Strict(strict)
    if field.type == "integer":
        low = max(int(field.min), -MAX_SAFE_INTEGER) if field.min is not None else -MAX_SAFE_INTEGER
        high = min(int(field.max), MAX_SAFE_INTEGER) if field.max is not None else MAX_SAFE_INTEGER
        return Annotated[int, strictness, Field(ge=low, le=high), BeforeValidator(_whole_number)]
    if field.type == "number":
        return Annotated[float, Field(ge=field.min, le=field.max, allow_inf_nan=False)]
    if field.type == "boolean":
        return Annotated[bool, strictness]
    if field.type == "datetime":
        return Annotated[AwareDatetime, AfterValidator(in_utc)]
    if field.type == "email":
        return Annotated[EmailStr, StringConstraints(max_length=320)]
    if field.type == "url":
        return Annotated[HttpUrl, UrlConstraints(max_length=max_length(field), allowed_schemes=["http", "https"])]
    if field.type == "enum":
        return Literal[tuple(field.values or ())]
    if field.type == "relation":
        return uuid.UUID
    # PostgreSQL refuses NUL in text outright: stop it (and other controls) here, as a 422.
    return Annotated[str, StringConstraints(max_length=max_length(field)), AfterValidator(_no_controls(""))]


def query_value_type(field: FieldSettings) -> Any:
    """The type of a filter or cursor value of ``field``, parsed from text."""
    return _scalar_type(field, strict=False)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Query(BaseModel):
    # Query strings are text: values are parsed into the field's type.
    model_config = ConfigDict(extra="forbid", populate_by_name=False)


def create_body_model(name: str, collection: CollectionSettings) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for field_name, field in collection.fields.items():
        kind = body_type(field)
        fields[field_name] = (kind, ...) if field.required else (kind | None, None)
    return create_model(f"{_camel(name)}Create", __base__=_Body, **fields)


def update_body_model(name: str, collection: CollectionSettings) -> type[BaseModel]:
    """Every field optional; a required field may be left out but not set to null.

    The default of a required field is not validated, so leaving it out is
    fine, while an explicit ``null`` fails its (non-nullable) type.
    """
    fields: dict[str, Any] = {}
    for field_name, field in collection.fields.items():
        kind = body_type(field)
        fields[field_name] = (kind, None) if field.required else (kind | None, None)
    return create_model(f"{_camel(name)}Update", __base__=_Body, **fields)


def record_model(name: str, collection: CollectionSettings) -> type[BaseModel]:
    """The shape of a record in responses (for the OpenAPI document)."""
    output: dict[str, Any] = {
        "id": (uuid.UUID, ...),
        "owner": (uuid.UUID | None, ...),
        "created_at": (AwareDatetime, ...),
        "updated_at": (AwareDatetime, ...),
    }
    for field_name, field in collection.fields.items():
        output[field_name] = (_output_type(field) | None, ...)
    return create_model(_camel(name), **output)


def _output_type(field: FieldSettings) -> Any:
    if field.type in ("integer", "number", "boolean", "datetime", "enum", "relation"):
        return _scalar_type(field, strict=True)
    return JsonValue if field.type == "json" else str


def page_model(name: str, record: type[BaseModel]) -> type[BaseModel]:
    return create_model(f"{_camel(name)}Page", items=(list[record], ...), next_cursor=(str | None, ...))  # type: ignore[valid-type]


def sort_keys(collection: CollectionSettings) -> list[str]:
    keys = ["id", *(name for name, field in collection.fields.items() if field.sortable)]
    return [*keys, *(f"-{key}" for key in keys)]


def filter_parameters(collection: CollectionSettings) -> dict[str, tuple[str, str]]:
    """Query parameter name (``priority.gte``) -> (field, operator)."""
    return {
        f"{name}.{op}": (name, op)
        for name, field in collection.fields.items()
        if field.filterable
        for op in OPERATORS[field.type]
    }


def unknown_parameter(collection: CollectionSettings, parameter: str) -> str:
    """Why a list query parameter does not exist: a bare "extra inputs are not
    permitted" would not tell a client that the field exists but is not filterable."""
    name, _, op = parameter.partition(".")
    field = collection.fields.get(name)
    if field is None or not op:
        return "No such query parameter: besides limit, cursor and sort, filters are <field>.<operator>."
    if not field.filterable:
        return f"The field {name} is not filterable in this collection."
    return f"The field {name} takes the operators {', '.join(OPERATORS[field.type])}."


def query_model(name: str, collection: CollectionSettings) -> type[BaseModel]:
    fields: dict[str, Any] = {
        "limit": (int, Field(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)),
        "cursor": (str | None, Field(None, max_length=1024, pattern=r"^[A-Za-z0-9_-]+$")),
        "sort": (Literal[tuple(sort_keys(collection))] | None, None),
    }
    for parameter, (field_name, op) in filter_parameters(collection).items():
        field = collection.fields[field_name]
        kind = query_value_type(field)
        if op == "in":
            kind = Annotated[list[kind], Field(min_length=1, max_length=MAX_IN_VALUES)]  # type: ignore[valid-type]
        elif op == "prefix":
            kind = Annotated[
                str, StringConstraints(min_length=1, max_length=max_length(field)), AfterValidator(_no_controls(""))
            ]
        fields[f"{field_name}__{op}"] = (kind | None, Field(None, alias=parameter))
    return create_model(f"{_camel(name)}Query", __base__=_Query, **fields)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
