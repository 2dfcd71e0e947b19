"""An audit event's entry: the bytes its Merkle leaf commits to.

The entry is canonical JSON (sorted keys, no spaces, UTF-8) of::

    {"v": 1, "at": "<RFC 3339, microseconds, Z>", "tag": ..., "outcome": ...,
     "request_id": ... | null, "personal": "<hex>"}

and the leaf hash is RFC 6962 §2.1's ``SHA-256(0x00 ‖ entry)``. The personal
fields (actor, subject, address, details) enter only through ``personal`` =
``SHA-256(salt ‖ canonical JSON of {"actor_id", "subject_id", "ip",
"details"})`` with a random 32-byte salt per event: erasing the salt and the
fields (pseudonymisation) leaves a hash nobody can test a guess against, and
the leaf, the tree and every checkpoint stay as they were.

Canonical JSON here is what ``json.dumps(value, sort_keys=True,
separators=(",", ":"), ensure_ascii=False)`` writes for the values events
hold (strings, integers, booleans, null, lists, objects), so a verifier off
the box needs nothing but the standard library (docs/audit.md).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import orjson

from bastion.security import digest
from bastion.security.merkle import leaf_hash

ENTRY_VERSION = 1
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _other(value: Any) -> str:
    # asyncpg's UUID subclass, which orjson does not take for a UUID.
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def canonical(value: Any) -> bytes:
    """Canonical JSON of ``value`` (sorted keys, compact, UTF-8).

    orjson for speed; the standard library, which writes the same bytes, for
    what orjson refuses (integers past 64 bits, which details may hold).
    """
    try:
        return orjson.dumps(value, default=_other, option=_OPTIONS)
    except TypeError:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_other).encode()


def format_at(at: dt.datetime) -> str:
    """``2026-12-01T17:14:40.123456Z``: always microseconds, always UTC, as the database keeps it."""
    if at.tzinfo is not dt.UTC:
        at = at.astimezone(dt.UTC)
    # isoformat is twice as fast as strftime; a UTC time's is always 26 characters plus "+00:00".
    return at.isoformat(timespec="microseconds")[:26] + "Z"


def personal_hash(
    salt: bytes,
    actor_id: uuid.UUID | str | None,
    subject_id: uuid.UUID | str | None,
    ip: str | None,
    details: dict[str, Any] | None,
) -> bytes:
    """SHA-256(salt ‖ canonical JSON of the personal fields)."""
    # orjson writes a UUID as str() does (lower-case, hyphenated), without the str() call.
    fields = {"actor_id": actor_id, "subject_id": subject_id, "ip": ip, "details": details or {}}
    return digest(salt + canonical(fields))


def entry(at: dt.datetime | str, tag: str, outcome: str, request_id: str | None, personal: bytes) -> bytes:
    """The entry bytes of one event (``at`` a datetime, or already formatted)."""
    return canonical(
        {
            "v": ENTRY_VERSION,
            "at": at if isinstance(at, str) else format_at(at),
            "tag": tag,
            "outcome": outcome,
            "request_id": request_id,
            "personal": personal.hex(),
        }
    )


def leaf_of(at: dt.datetime | str, tag: str, outcome: str, request_id: str | None, personal: bytes) -> bytes:
    """The RFC 6962 leaf hash of one event."""
    return leaf_hash(entry(at, tag, outcome, request_id, personal))


def row_personal(row: Any) -> bytes | None:
    """The personal hash of a stored row: recomputed from its salt and fields,
    or (redacted) the hash kept in its details when the salt was erased."""
    if row.personal_salt is not None:
        return personal_hash(row.personal_salt, row.actor_id, row.subject_id, row.ip, row.details)
    kept = kept_personal(row.details, row.redacted_at is not None)
    if kept is not None:
        try:
            return bytes.fromhex(kept)
        except ValueError:
            return None
    return None


def fields_leaf(
    at: dt.datetime | str,
    tag: str,
    outcome: str,
    request_id: str | None,
    *,
    salt: bytes | None,
    actor_id: Any,
    subject_id: Any,
    ip: str | None,
    details: Any,
    kept: str | None,
) -> bytes | None:
    """The leaf an event's fields give: the one recomputation of a leaf, for stored
    rows and exported events alike. The personal hash comes from the salt and the
    personal fields, or (redacted: the salt erased) is ``kept``, the hex hash left in
    its place; None when there is neither. ValueError when ``kept`` or a field is
    malformed."""
    if salt is not None:
        personal = personal_hash(salt, actor_id, subject_id, ip, details)
    elif kept is not None:
        personal = bytes.fromhex(kept)
    else:
        return None
    return leaf_of(at, tag, outcome, request_id, personal)


def kept_personal(details: Any, redacted: bool) -> str | None:
    """The personal hash a redacted row keeps in its details (``{"personal": "<hex>"}``)."""
    kept = details.get("personal") if redacted and isinstance(details, dict) else None
    return kept if isinstance(kept, str) else None


def row_leaf(row: Any) -> bytes | None:
    """The leaf a stored row should have (None when its content is gone: purged, or malformed)."""
    if row.purged_at is not None:
        return None
    try:
        return fields_leaf(
            row.at, row.tag, row.outcome, row.request_id,
            salt=row.personal_salt, actor_id=row.actor_id, subject_id=row.subject_id, ip=row.ip,
            details=row.details, kept=kept_personal(row.details, row.redacted_at is not None),
        )  # fmt: skip
    except ValueError:
        return None
