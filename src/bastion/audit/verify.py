"""``bastion audit verify``: recompute the log and check it against its seals
and every signed checkpoint, in the database and outside it.

What each tampering looks like (``Finding.kind``):

- **altered**: a row's content no longer gives its stored leaf, or its
  content was rewritten together with its leaf (then its seal fails);
- **deleted**: a gap in ``seq`` (the row right after the gap is named), or
  fewer sequenced rows than the tree or a checkpoint counts (the last row
  still there is named). A deleted row's id is never guessed: ids have gaps
  (PostgreSQL skips those of rolled-back transactions), so only a row that
  exists is named;
- **inserted**: a row the sequencer never took although it should have (its
  ``at`` is older than the log's head by more than ten minutes,
  ``bastion.audit.tree.BACKDATE_TOLERANCE``, or it has no
  valid leaf), or a second row at a ``seq`` already taken;
- **reordered**: a row whose seal does not match its place (``seq``) or id;
- **rewritten**: every row agrees with itself but the tree does not match a
  signed checkpoint: the table was rebuilt (with its leaves, seals and tree)
  by someone holding the database. The event named is the first one after
  the last checkpoint that still matches.
- **checkpoint**: a checkpoint whose signature does not verify with any
  notary key, or whose stored size or root disagrees with its own note.

Redacted rows (salt and personal fields erased) are checked through the
personal hash they keep; purged rows (content erased) through their stored
leaf and seal; both are counted, never reported as tampering.

The roots at every checkpoint's size are recomputed from one pass over the
same leaves, so consistency between successive checkpoints follows from
each of them matching; ``bastion audit prove --consistency`` prints the
RFC 9162 proof for off-box verifiers.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from bastion.audit.entry import fields_leaf, format_at, kept_personal, row_leaf
from bastion.audit.events import Outcome
from bastion.audit.models import AuditCheckpoint, AuditEvent
from bastion.audit.sinks import SUFFIX
from bastion.audit.tree import BACKDATE_TOLERANCE, SEAL_CONTEXT, log_head, seal_message, tree_state
from bastion.db import Database
from bastion.security import SecurityError
from bastion.security.keyed import KeyedHashes
from bastion.security.keys import Keyring
from bastion.security.merkle import HASH_SIZE, Frontier, verify_inclusion
from bastion.security.notes import parse_checkpoint, verify_note

PAGE = 10_000
# Findings about the tree as a whole, named by the first event a checkpoint no longer covers.
STRUCTURAL = frozenset({"rewritten", "checkpoint"})
MAX_FINDINGS = 100
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Finding:
    kind: str
    event_id: int | None
    message: str
    # Where in the log it is (seq), so "first" means first in log order.
    position: int


@dataclass
class Report:
    events: int = 0
    sequenced: int = 0
    pending: int = 0
    redacted: int = 0
    purged: int = 0
    size: int = 0
    checkpoints: int = 0
    checkpoint_files: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.findings

    def first(self) -> Finding | None:
        """The first bad event in log order. A changed row also changes every root after it,
        so a row's own finding comes before the checkpoints it breaks."""
        own = [f for f in self.findings if f.kind not in STRUCTURAL] or self.findings
        return min(own, key=lambda f: f.position) if own else None

    def add(self, kind: str, event_id: int | None, message: str, position: int) -> None:
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(Finding(kind, event_id, message, position))


def verdict(report: Report) -> tuple[Outcome, dict[str, Any]]:
    """The outcome and details of the ``audit:verify`` event a verification records
    (``bastion audit verify`` and serve's scheduled one alike): a failure is what the
    monitor's audit-verify-failed rule alerts on, and what ``bastion check`` reports."""
    details: dict[str, Any] = {"size": report.size, "findings": len(report.findings)}
    first = report.first()
    if first is not None:
        details["first_bad_event"] = first.event_id
    return (Outcome.SUCCESS if report.intact else Outcome.FAILURE), details


@dataclass(frozen=True)
class SignedCheckpoint:
    source: str
    size: int
    root: bytes


def read_vkeys(path: Path) -> list[str]:
    """The note verifier keys in a ``bastion keys export-public`` file (every ``vkey`` string in it),
    or in a text file of one vkey per line."""
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text)
    except ValueError:
        return [line.strip() for line in text.splitlines() if line.strip()]
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "vkey" and isinstance(item, str):
                    found.append(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(document)
    return found


def open_note(note: str, vkeys: Sequence[str], origin: str | None) -> tuple[int, bytes]:
    """(size, root) of a signed checkpoint note; ValueError when it does not verify."""
    try:
        body = verify_note(note, vkeys)
        note_origin, size, root = parse_checkpoint(body)
    except (SecurityError, ValueError) as exc:
        raise ValueError("signature does not verify with any notary key") from exc
    if origin is not None and note_origin != origin:
        raise ValueError(f"checkpoint of another log ({note_origin!r})")
    return size, root


def checkpoint_files(directories: Iterable[Path]) -> list[tuple[Path, str]]:
    files: list[tuple[Path, str]] = []
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob(f"*{SUFFIX}")):
            files.append((path, path.read_text(encoding="utf-8")))
    return files


# The columns verify reads, as the driver gives them: with 100,000 rows, the
# per-value conversions (JSON, UUID, datetime) were most of a run. ``_Row``
# turns them into exactly what record_event hashed.
_RAW = sa.select(
    AuditEvent.id,
    AuditEvent.seq,
    sa.type_coerce(AuditEvent.at, sa.String).label("at"),
    AuditEvent.tag,
    AuditEvent.outcome,
    AuditEvent.request_id,
    sa.type_coerce(AuditEvent.actor_id, sa.String).label("actor_id"),
    sa.type_coerce(AuditEvent.subject_id, sa.String).label("subject_id"),
    AuditEvent.ip,
    sa.cast(AuditEvent.details, sa.Text).label("details"),
    AuditEvent.leaf_hash,
    AuditEvent.personal_salt,
    AuditEvent.seal,
    sa.type_coerce(AuditEvent.redacted_at, sa.String).label("redacted_at"),
    sa.type_coerce(AuditEvent.purged_at, sa.String).label("purged_at"),
)
_SQLITE_TIME = len("2026-12-01 17:14:40.123456")
_HEX_UUID = 32


def _uuid_text(value: Any) -> str | None:
    """A stored UUID as str(uuid.UUID) writes it (SQLite keeps 32 hex digits; asyncpg gives an object)."""
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) == _HEX_UUID:
            return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}".lower()
        return value.lower()
    return str(value)


# orjson reads integers past 64 bits as floats; the standard library keeps them.
_LONG_NUMBER = re.compile(r"\d{19}")


def _details(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return json.loads(value) if _LONG_NUMBER.search(value) else orjson.loads(value)


class _Row:
    """One row of ``_RAW``."""

    __slots__ = ("actor_id", "at", "details", "id", "ip", "leaf_hash", "outcome", "personal_salt", "purged_at",
                 "redacted_at", "request_id", "seal", "seq", "subject_id", "tag")  # fmt: skip

    def __init__(self, raw: Any) -> None:
        (self.id, self.seq, self.at, self.tag, self.outcome, self.request_id, self.actor_id, self.subject_id,
         self.ip, self.details, self.leaf_hash, self.personal_salt, self.seal, self.redacted_at,
         self.purged_at) = raw  # fmt: skip

    def at_text(self) -> str:
        value = self.at
        if isinstance(value, str):
            # SQLAlchemy's SQLite form, always with microseconds: "YYYY-MM-DD HH:MM:SS.ffffff".
            if len(value) == _SQLITE_TIME and value[10] == " ":
                return f"{value[:10]}T{value[11:]}Z"
            return format_at(dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC))
        return format_at(value)

    def leaf(self) -> bytes | None:
        """What record_event would have computed from this row (None when purged: nothing to recompute)."""
        if self.purged_at is not None:
            return None
        try:
            details = _details(self.details)
        except ValueError:
            return b""
        try:
            return fields_leaf(
                self.at_text(), self.tag, self.outcome, self.request_id,
                salt=bytes(self.personal_salt) if self.personal_salt is not None else None,
                actor_id=_uuid_text(self.actor_id), subject_id=_uuid_text(self.subject_id), ip=self.ip,
                details=details, kept=kept_personal(details, self.redacted_at is not None),
            )  # fmt: skip
        except ValueError:
            return b""


async def verify_log(  # noqa: PLR0912, PLR0915 - one pass, every check in order
    db: Database,
    hmac_ring: Keyring,
    vkeys: Sequence[str],
    *,
    origin: str,
    now: dt.datetime,
    directories: Sequence[Path] = (),
    progress: Progress | None = None,
) -> Report:
    report = Report()
    seals = KeyedHashes(hmac_ring, SEAL_CONTEXT)
    state = await tree_state(db)
    report.events = int(await db.value(sa.select(sa.func.count()).select_from(AuditEvent)) or 0)

    # Every signed checkpoint, by the size it covers.
    expected: dict[int, list[SignedCheckpoint]] = {}
    for row in await db.all(sa.select(AuditCheckpoint).order_by(AuditCheckpoint.size)):
        report.checkpoints += 1
        where = f"checkpoint #{row.id} (database)"
        try:
            size, root = open_note(row.note, vkeys, origin)
        except ValueError as exc:
            report.add("checkpoint", None, f"{where}: {exc}", int(row.size))
            continue
        if size != row.size or root != bytes(row.root_hash):
            report.add("checkpoint", None, f"{where}: its size or root differs from its signed note", size)
        expected.setdefault(size, []).append(SignedCheckpoint(where, size, root))
    for path, note in checkpoint_files(directories):
        report.checkpoint_files += 1
        try:
            size, root = open_note(note, vkeys, origin)
        except ValueError as exc:
            report.add("checkpoint", None, f"{path}: {exc}", 0)
            continue
        expected.setdefault(size, []).append(SignedCheckpoint(str(path), size, root))

    frontier = Frontier.from_bytes(0, b"")
    previous: Any = None
    matching: list[int] = []  # checkpoint sizes whose roots match, and those that do not
    mismatching: list[int] = []
    first_id_after: dict[int, int] = {}  # seq -> id, for naming the event after a matching checkpoint
    broken = False  # a structural problem: roots past it mean nothing more
    total = state.size if state is not None else 0
    last_seq = -1
    while True:
        rows = await db.all(_RAW.where(AuditEvent.seq > last_seq).order_by(AuditEvent.seq).limit(PAGE))
        if not rows:
            break
        for raw in rows:
            row = _Row(raw)
            seq = int(row.seq)
            report.sequenced += 1
            if row.redacted_at is not None:
                report.redacted += 1
            if row.purged_at is not None:
                report.purged += 1
            if previous is not None and seq == int(previous.seq):
                report.add("inserted", row.id, f"event {row.id} takes seq {seq}, already event {previous.id}'s", seq)
                continue
            if seq != frontier.size:
                if not broken:
                    # The row right after the gap: a real row. Ids are not contiguous
                    # (PostgreSQL skips those of rolled-back inserts), so the missing
                    # one's id is never guessed.
                    report.add(
                        "deleted",
                        int(row.id),
                        f"events at seq {frontier.size}..{seq - 1} are missing (before event {row.id})",
                        frontier.size,
                    )
                broken = True
            stored = bytes(row.leaf_hash) if row.leaf_hash is not None else b""
            leaf = row.leaf()
            if row.purged_at is None and leaf != stored:
                report.add("altered", row.id, f"event {row.id} (seq {seq}) does not match its leaf hash", seq)
            elif row.seal is None or not seals.matches(seal_message(seq, int(row.id), stored), row.seal):
                kind = "reordered" if leaf == stored or row.purged_at is not None else "altered"
                report.add(kind, row.id, f"event {row.id} (seq {seq}) does not match its seal", seq)
            if not broken:
                # What the tree should hold here: the recomputed leaf, else the stored one,
                # else (neither is a hash) a placeholder that matches no checkpoint.
                candidate = leaf if leaf else stored
                frontier.append(candidate if len(candidate) == HASH_SIZE else bytes(HASH_SIZE))
                first_id_after[frontier.size - 1] = int(row.id)
                for signed in expected.get(frontier.size, ()):
                    if frontier.root() == signed.root:
                        matching.append(signed.size)
                    else:
                        mismatching.append(signed.size)
                        report.add(
                            "rewritten",
                            None,
                            f"the tree at size {signed.size} does not match {signed.source}",
                            signed.size,
                        )
            previous = row
            last_seq = seq
        if progress is not None:
            progress(report.sequenced, total)

    report.size = frontier.size
    if state is not None and not broken:
        if state.size > frontier.size:
            # The newest rows are gone: nothing follows them, so the last row kept is named.
            report.add(
                "deleted",
                int(previous.id) if previous is not None else None,
                f"the tree counts {state.size} events, the table holds {frontier.size}",
                frontier.size,
            )
        elif state.size == frontier.size and state.size and bytes(state.root_hash or b"") != frontier.root():
            report.add("rewritten", None, "the stored tree root differs from the recomputed one", frontier.size)
    for size, beyond in expected.items():
        if size > frontier.size and not broken:
            for one in beyond:
                report.add(
                    "deleted",
                    int(previous.id) if previous is not None else None,
                    f"{one.source} covers {size} events, the table holds {frontier.size}",
                    frontier.size,
                )

    # Findings that name no event name the first one after the last checkpoint
    # that still matches (before the first that does not).
    first_mismatch = min(mismatching, default=frontier.size + 1)
    matched = max((size for size in matching if size < first_mismatch), default=0)
    named: list[Finding] = []
    for finding in report.findings:
        if finding.event_id is None:
            after = first_id_after.get(matched)
            named.append(Finding(finding.kind, after, finding.message, min(finding.position, matched)))
        else:
            named.append(finding)
    report.findings = named

    # Rows never sequenced: pending, or inserted behind the sequencer's back.
    # The sequencer's own rule (bastion.audit.tree): it adopts rows no older
    # than the newest sequenced event by more than the horizon.
    head = await log_head(db)
    horizon = head - BACKDATE_TOLERANCE if head is not None else None
    for row in await db.all(sa.select(AuditEvent).where(AuditEvent.seq.is_(None)).order_by(AuditEvent.id)):
        stored = bytes(row.leaf_hash) if row.leaf_hash is not None else b""
        if row_leaf(row) != stored:
            report.add("inserted", row.id, f"event {row.id} is not in the tree and has no valid leaf", 1 << 62)
        elif horizon is not None and row.at < horizon:
            report.add("inserted", row.id, f"event {row.id} is dated {format_at(row.at)}, behind the log", 1 << 62)
        else:
            report.pending += 1
    return report


# -- bundles ---------------------------------------------------------------------


def verify_bundle(bundle: dict[str, Any], vkeys: Sequence[str]) -> Report:
    """Check an ``audit export`` bundle offline: its checkpoint's signature,
    each event's leaf from its fields, and each leaf's inclusion proof."""
    report = Report()
    try:
        size, root = open_note(str(bundle["checkpoint"]), vkeys, None)
    except (KeyError, ValueError) as exc:
        events = bundle.get("events") or [{}]
        first = events[0].get("id") if isinstance(events[0], dict) else None
        report.add("checkpoint", first if isinstance(first, int) else None, f"the bundle's checkpoint: {exc}", 0)
        return report
    report.size = size
    report.checkpoints = 1
    for event in bundle.get("events", []):
        report.events += 1
        try:
            event_id, seq = int(event["id"]), int(event["seq"])
            stored = bytes.fromhex(event["leaf"])
            proof = [bytes.fromhex(node) for node in event["proof"]]
        except (KeyError, TypeError, ValueError):
            report.add("altered", event.get("id") if isinstance(event, dict) else None, "malformed event", 0)
            continue
        leaf = bundle_leaf(event)
        if event.get("purged"):
            report.purged += 1
        elif event.get("redacted"):
            report.redacted += 1
        if leaf is not None and leaf != stored:
            report.add("altered", event_id, f"event {event_id} (seq {seq}) does not match its leaf hash", seq)
        elif not verify_inclusion(stored, seq, size, proof, root):
            report.add("altered", event_id, f"event {event_id} (seq {seq}) is not in the signed tree", seq)
    return report


def bundle_leaf(event: dict[str, Any]) -> bytes | None:
    """The leaf an exported event's fields give (None when purged: its stored leaf stands)."""
    if event.get("purged"):
        return None
    return fields_leaf(
        event["at"], event["tag"], event["outcome"], event.get("request_id"),
        salt=bytes.fromhex(event["salt"]) if event.get("salt") else None,
        actor_id=event.get("actor_id"), subject_id=event.get("subject_id"), ip=event.get("ip"),
        details=event.get("details"), kept=event.get("personal") or None,
    )  # fmt: skip
