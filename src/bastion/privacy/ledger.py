"""The erasure ledger: which users were erased, so that no restore brings one back.

One JSON line per erased user, kept in the data directory
(``erasure-ledger.jsonl``) and, copied by every ``backup create``, beside the
backups in every destination::

    {"also":{…},"at":"2026-12-01T20:00:00+00:00","kid":"…","pseudonym":"<hex>","v":1,"sig":"— <name> <base64>"}

- ``pseudonym`` is HMAC-SHA256 of the user id under the "hmac" keyring's
  key ``kid`` (the active one at erasure), ``also`` the same under each
  other key the keyring still held (``{kid: hex}``), so a backup whose
  keystore predates a rotation of the "hmac" keyring still recognises the
  user. Neither names the user to anyone without the keystore: an erased
  user's id is in no readable place any more, and the ledger holds no
  address or name.
- ``sig`` is a C2SP signed-note signature by the notary key over the
  canonical JSON of the other members (sorted keys, no spaces) plus a
  newline, under the audit log's origin: each line verifies on its own,
  against the live keystore's notary keys, a restored keystore's, or the
  vkeys ``bastion keys export-public`` wrote. A line added or changed by
  anyone without the notary key is refused, so the ledger cannot be used to
  delete users from a restore.

``read_ledger`` verifies, ``merge_ledgers`` unites copies, and
``apply_ledger`` erases the users an entry names from a restored instance,
with the same steps as an erasure (``bastion.privacy.removal``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bastion.audit import EventTag, Origin
from bastion.audit.models import AuditEvent
from bastion.db import Database, open_database, transaction
from bastion.identity.models import User
from bastion.privacy.removal import PSEUDONYM_CONTEXT, data_service_of, pseudonym, remove_account, scrub_tables
from bastion.secrets import Keyrings, checkpoint_origin, open_keyrings
from bastion.security import InvalidNote, KeyedHashes, NoteKey, keyed_hashes_under_every_key, verify_note
from bastion.settings import Settings

LEDGER_NAME = "erasure-ledger.jsonl"
LEDGER_VERSION = 1
_LOCK_NAME = ".erasure-ledger.lock"
_ERASURES = sa.select(AuditEvent.details).where(AuditEvent.tag == EventTag.PRIVACY_ERASE.value).order_by(AuditEvent.id)
_SIG_PREFIX = "\u2014 "

__all__ = [
    "LEDGER_NAME",
    "LedgerEntry",
    "LedgerInvalid",
    "append_entry",
    "apply_ledger",
    "catch_up",
    "ledger_path",
    "locked",
    "merge_ledgers",
    "new_entry",
    "pseudonym",
    "read_ledger",
    "recorded_lines",
    "write_lines",
]


class LedgerInvalid(Exception):
    """A ledger line that does not parse or verify; the message names its line number."""


@dataclass(frozen=True)
class LedgerEntry:
    at: str
    pseudonym: str
    kid: str
    line: str  # the line as stored (without its newline)
    also: dict[str, str] = field(default_factory=dict)

    @property
    def digests(self) -> dict[str, str]:
        """kid -> pseudonym, every key the entry names."""
        return {**self.also, self.kid: self.pseudonym}


def ledger_path(settings: Settings) -> Path:
    return settings.data_dir / LEDGER_NAME


def _body(fields: dict[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n"


def new_entry(keys: Keyrings, name: str, user_id: uuid.UUID, at: dt.datetime) -> LedgerEntry:
    """The signed ledger line for ``user_id``, erased at ``at``, signed as ``name`` (the audit origin)."""
    digests = keyed_hashes_under_every_key(keys.hmac, str(user_id), PSEUDONYM_CONTEXT)
    kid = keys.hmac.active_kid
    fields: dict[str, Any] = {
        "v": LEDGER_VERSION,
        "at": at.astimezone(dt.UTC).isoformat(),
        "pseudonym": digests.pop(kid),
        "kid": kid,
        "also": digests,
    }
    note = keys.notary_signer().sign(_body(fields), name).note
    signature = note.rstrip("\n").rsplit("\n", 1)[1]
    line = json.dumps({**fields, "sig": signature}, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return LedgerEntry(fields["at"], fields["pseudonym"], kid, line, digests)


def append_entry(settings: Settings, keys: Keyrings, user_id: uuid.UUID, at: dt.datetime) -> LedgerEntry:
    """Append ``user_id``'s entry to the data directory's ledger (0600), durably."""
    entry = new_entry(keys, checkpoint_origin(settings), user_id, at)
    write_lines(settings, [entry.line])
    return entry


@contextlib.contextmanager
def locked(data_dir: Path) -> Iterator[None]:
    """The data directory's ledger for this process alone (an flock): its writers and readers
    in every process of the instance take it."""
    fd = os.open(data_dir / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_lines(settings: Settings, lines: Iterable[str]) -> int:
    """Append each signed line (``LedgerEntry.line``) the data directory's ledger does not hold
    yet, durably (0600); how many. A last line a crash cut short (no newline) is dropped first:
    written whole it would be unreadable, and its erasure's line comes back by ``catch_up``.
    OSError if the ledger cannot be written."""
    wanted = list(dict.fromkeys(lines))
    if not wanted:
        return 0
    path = ledger_path(settings)
    with locked(settings.data_dir):
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            held = path.read_bytes()
            whole = held.rfind(b"\n") + 1
            if whole < len(held):
                os.ftruncate(fd, whole)
            present = set(held[:whole].decode("ascii", errors="replace").splitlines())
            missing = [line for line in wanted if line not in present]
            if missing:
                os.write(fd, "".join(line + "\n" for line in missing).encode("ascii"))
                os.fsync(fd)
        finally:
            os.close(fd)
    return len(missing)


async def recorded_lines(db: Database) -> list[str]:
    """The ledger lines the ``privacy:erase`` events hold, oldest first: every erasure's, kept in the
    transaction that erased (and in the failure event of an append that failed)."""
    rows = await db.all(_ERASURES)
    return [line for row in rows if isinstance(line := (row.details or {}).get("ledger_line"), str)]


async def catch_up(settings: Settings, db: Database) -> int:
    """Append to the data directory's ledger the lines erasures recorded that it lacks: an append
    that failed (a full disk) or never ran (the process died between an erasure's commit and its
    append); how many. ``serve`` runs it at start and with every retention run, ``backup create``
    before it copies the ledger."""
    return await asyncio.to_thread(write_lines, settings, await recorded_lines(db))


def _verifiers(keys: Keyrings | Iterable[str | NoteKey], name: str) -> list[str | NoteKey]:
    if isinstance(keys, Keyrings):
        return [key.note_key(name) for key in keys.notary_signer().public_keys()]
    return list(keys)


def _parse(line: str, number: int) -> dict[str, Any]:
    try:
        fields = json.loads(line)
    except ValueError:
        raise LedgerInvalid(f"erasure ledger line {number}: not JSON") from None
    if not isinstance(fields, dict) or fields.get("v") != LEDGER_VERSION:
        raise LedgerInvalid(f"erasure ledger line {number}: not a version {LEDGER_VERSION} entry")
    for member in ("at", "pseudonym", "kid", "sig"):
        if not isinstance(fields.get(member), str):
            raise LedgerInvalid(f"erasure ledger line {number}: no {member}")
    also = fields.get("also", {})
    if not isinstance(also, dict) or not all(isinstance(v, str) for v in also.values()):
        raise LedgerInvalid(f"erasure ledger line {number}: bad also")
    return fields


def read_ledger(data: bytes, keys: Keyrings | Iterable[str | NoteKey]) -> list[LedgerEntry]:
    """Every entry of a ledger, each line's signature verified against ``keys``: a keystore
    (its notary keys, active and retired) or verifier keys (``export-public``'s vkeys).

    Blank lines are skipped; any other line that does not parse or verify raises
    LedgerInvalid naming its line number (nothing is applied from a ledger with one).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise LedgerInvalid("erasure ledger: not UTF-8 text") from None
    fixed = None if isinstance(keys, Keyrings) else _verifiers(keys, "")
    entries: list[LedgerEntry] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        fields = _parse(line, number)
        signature = fields.pop("sig")
        name = signature.removeprefix(_SIG_PREFIX).partition(" ")[0]
        verifiers = fixed if fixed is not None else _verifiers(keys, name)
        try:
            verify_note(f"{_body(fields)}\n{signature}\n", verifiers)
        except InvalidNote:
            raise LedgerInvalid(f"erasure ledger line {number}: the signature does not verify") from None
        entries.append(
            LedgerEntry(fields["at"], fields["pseudonym"], fields["kid"], line, dict(fields.get("also", {})))
        )
    return entries


def merge_ledgers(*texts: bytes | str) -> bytes:
    """One ledger holding every line of ``texts`` once, oldest first (by ``at``, then the line).

    Lines are compared as they are, so merging copies of one ledger is
    idempotent. Lines are parsed (LedgerInvalid names the text and line of a
    bad one), not verified: ``read_ledger`` does that before anything is applied.
    """
    lines: dict[str, str] = {}
    for index, given in enumerate(texts, start=1):
        try:
            text = given.decode("utf-8") if isinstance(given, bytes) else given
        except UnicodeDecodeError:
            raise LedgerInvalid(f"erasure ledger {index}: not UTF-8 text") from None
        for number, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                try:
                    lines[line] = str(_parse(line, number)["at"])
                except LedgerInvalid as exc:
                    raise LedgerInvalid(f"{exc} (of ledger {index})") from None
    ordered = sorted(lines, key=lambda line: (lines[line], line))
    return "".join(line + "\n" for line in ordered).encode("utf-8")


async def apply_ledger(settings: Settings, entries: Iterable[LedgerEntry]) -> int:
    """On the instance ``settings`` names (a restored one), erase every user an entry names:
    their data key destroyed, their records and account deleted and their audit events
    pseudonymised, as an erasure does (``bastion.privacy.removal``). Returns how many.

    Users are matched by recomputing each one's pseudonym under the kids the entries
    name that this instance's "hmac" keyring holds (one HMAC per user and kid).
    """
    wanted: dict[str, set[str]] = {}
    for entry in entries:
        for kid, digest in entry.digests.items():
            wanted.setdefault(kid, set()).add(digest)
    if not wanted:
        return 0
    keys = open_keyrings(settings)
    hashes = KeyedHashes(keys.hmac, PSEUDONYM_CONTEXT)
    db = open_database(settings.sqlalchemy_url)
    try:
        users = [row.id for row in await db.all(sa.select(User.id))]
        doomed: list[uuid.UUID] = []
        for kid, digests in wanted.items():
            under = hashes.under(kid)
            if under is not None:
                doomed.extend(user for user in users if under(str(user)) in digests)
        data = data_service_of(keys, db)
        await data.refresh()
        erased = 0
        for user_id in sorted(set(doomed)):
            async with transaction(db) as tx:
                await remove_account(
                    tx,
                    data=data,
                    keys=keys,
                    user_id=user_id,
                    origin=Origin.cli(),
                    actor_id=None,
                    via="ledger",
                )
            data.sealer.user_keys.forget(user_id)
            erased += 1
        await db.scrub(scrub_tables(data))
        return erased
    finally:
        await db.close()
