"""The backup manifest and the signed notes that vouch for it.

A backup file ``bastion-<YYYYmmddTHHMMSSZ>-<8 hex>.tar.zst.age`` (its id is
the name without the suffix) holds ``manifest.json``: what the backup is
(id, time, versions, the database's kind) and what it must contain (row
counts and content hashes per table, size and SHA-256 of every part).

Two signed notes (C2SP signed-note, the notary keyring's Ed25519 key, the
key name being the audit checkpoint origin, so the vkeys of ``bastion keys
export-public`` verify them):

- ``manifest.sig``, inside the archive: commits to the SHA-256 of
  ``manifest.json``'s bytes;
- the sidecar ``<name>.manifest``, beside the file: commits to the encrypted
  file's name, size and SHA-256 and carries the manifest itself, so a backup
  can be checked, and listed, without its identity.

A note is only ever checked against keys from outside the backup (the
export-public file, or the live keystore on the server): a signature checked
with a key found inside the thing it signs proves nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from bastion.backups.errors import BackupInvalid
from bastion.security import InvalidNote, StreamDigest, verify_note

__all__ = [
    "BACKUP_SUFFIX",
    "FORMAT",
    "NAME_RE",
    "SIDECAR_SUFFIX",
    "Manifest",
    "Part",
    "Sidecar",
    "Signer",
    "TableDigest",
    "backup_id_of",
    "created_at_of",
    "file_digest",
    "manifest_note",
    "parse_sidecar",
    "read_sidecar",
    "sidecar_note",
    "verify_manifest_note",
    "verify_sidecar",
]

FORMAT = "bastion-backup/v1"
BACKUP_SUFFIX = ".tar.zst.age"
SIDECAR_SUFFIX = ".manifest"
# bastion-20261201T204229Z-0a1b2c3d.tar.zst.age
NAME_RE = re.compile(r"bastion-(?P<at>[0-9]{8}T[0-9]{6}Z)-[0-9a-f]{8}" + re.escape(BACKUP_SUFFIX))
_ID_RE = re.compile(r"bastion-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MANIFEST_LINE = f"{FORMAT} manifest"
_SIDECAR_LINE = f"{FORMAT} sidecar"
# A manifest is a few kB per hundred tables; refuse anything absurd before parsing it.
MAX_MANIFEST_BYTES = 1 << 20
_READ_CHUNK = 1 << 20


class Signer(Protocol):
    """Signs a note body with the active notary key (``bastion.security.Notary`` under a name)."""

    @property
    def kid(self) -> str:
        """The kid of the key that signs."""

    def sign(self, body: str) -> str:
        """The signed note of ``body``."""


@dataclass(frozen=True)
class TableDigest:
    rows: int
    sha256: str


@dataclass(frozen=True)
class Part:
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a backup is and holds; ``to_json`` is the exact bytes that ``manifest.sig`` signs."""

    id: str
    created_at: dt.datetime
    bastion_version: str
    schema_revision: str | None
    database: Literal["sqlite", "postgresql"]
    tables: Mapping[str, TableDigest]
    parts: Mapping[str, Part]
    recipients: list[str]
    notary_kid: str
    format: str = field(default=FORMAT)

    @property
    def name(self) -> str:
        """The backup file's name."""
        return self.id + BACKUP_SUFFIX

    @property
    def database_part(self) -> str:
        """The archive path of the database: ``bastion.db`` (SQLite) or ``database.dump`` (pg_dump -Fc)."""
        return "bastion.db" if self.database == "sqlite" else "database.dump"

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces, ASCII): one line, signable as note text."""
        document = {
            "format": self.format,
            "id": self.id,
            "created_at": self.created_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "bastion_version": self.bastion_version,
            "schema_revision": self.schema_revision,
            "database": self.database,
            "tables": {name: {"rows": t.rows, "sha256": t.sha256} for name, t in self.tables.items()},
            "parts": {path: {"size": p.size, "sha256": p.sha256} for path, p in self.parts.items()},
            "recipients": list(self.recipients),
            "notary_kid": self.notary_kid,
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse and check every field; BackupInvalid naming the first bad one."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise BackupInvalid("manifest.json is too large")
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise BackupInvalid("manifest.json is not JSON") from None
        if not isinstance(doc, dict):
            raise BackupInvalid("manifest.json is not an object")
        if doc.get("format") != FORMAT:
            raise BackupInvalid(f"manifest.json: format is not {FORMAT}")
        try:
            return cls(
                id=_checked(doc, "id", str, _ID_RE),
                created_at=_time(doc),
                bastion_version=_checked(doc, "bastion_version", str),
                schema_revision=_optional_str(doc, "schema_revision"),
                database=_database(doc),
                tables={name: TableDigest(**_digest(v, "rows")) for name, v in _object(doc, "tables").items()},
                parts={path: Part(**_digest(v, "size")) for path, v in _object(doc, "parts").items()},
                recipients=_strings(doc, "recipients"),
                notary_kid=_checked(doc, "notary_kid", str),
            )
        except (TypeError, KeyError, ValueError) as exc:
            raise BackupInvalid(f"manifest.json: {exc}") from None


def _checked(doc: Mapping[str, Any], key: str, kind: type, pattern: re.Pattern[str] | None = None) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"{key} is missing or not a {kind.__name__}")
    if pattern is not None and not pattern.fullmatch(str(value)):
        raise ValueError(f"{key} is malformed")
    return value


def _optional_str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key} is not a string")
    return value


def _time(doc: Mapping[str, Any]) -> dt.datetime:
    text = _checked(doc, "created_at", str)
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise ValueError("created_at is not a UTC time") from None


def _database(doc: Mapping[str, Any]) -> Literal["sqlite", "postgresql"]:
    value = doc.get("database")
    if value == "sqlite":
        return "sqlite"
    if value == "postgresql":
        return "postgresql"
    raise ValueError("database is neither sqlite nor postgresql")


def _object(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
        raise ValueError(f"{key} is not an object")
    return value


def _digest(value: Any, count: str) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != {count, "sha256"}:
        raise ValueError(f"an entry is not {{{count}, sha256}}")
    number, sha = value[count], value["sha256"]
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise ValueError(f"{count} is not a count")
    if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
        raise ValueError("sha256 is not 64 hex digits")
    return {count: number, "sha256": sha}


def _strings(doc: Mapping[str, Any], key: str) -> list[str]:
    value = doc.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} is not a list of strings")
    return list(value)


# --- names ---------------------------------------------------------------------


def backup_id_of(name: str) -> str | None:
    """The id of a backup file's name, or None when the name is not one."""
    return name.removesuffix(BACKUP_SUFFIX) if NAME_RE.fullmatch(name) else None


def created_at_of(name: str) -> dt.datetime | None:
    """The time in a backup file's name (UTC, to the second)."""
    match = NAME_RE.fullmatch(name)
    if match is None:
        return None
    return dt.datetime.strptime(match["at"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)


def file_digest(path: Path, progress: Callable[[int], None] | None = None) -> Part:
    """Size and SHA-256 of a file, read in 1 MiB pieces (each reported to ``progress``)."""
    with path.open("rb") as file:
        return stream_digest(file, progress)


def stream_digest(file: BinaryIO, progress: Callable[[int], None] | None = None) -> Part:
    """Size and SHA-256 of an open file from where it stands to its end."""
    hashed = StreamDigest()
    while chunk := file.read(_READ_CHUNK):
        hashed.update(chunk)
        if progress is not None:
            progress(len(chunk))
    return Part(hashed.size, hashed.hexdigest())


# --- manifest.sig ----------------------------------------------------------------


def manifest_note(manifest_json: bytes, manifest_id: str, signer: Signer) -> str:
    """``manifest.sig``: a note committing to the SHA-256 of ``manifest.json``'s exact bytes."""
    hashed = StreamDigest()
    hashed.update(manifest_json)
    return signer.sign(f"{_MANIFEST_LINE}\n{manifest_id}\n{hashed.hexdigest()}\n")


def verify_manifest_note(note: bytes, manifest_json: bytes, vkeys: Iterable[str]) -> Manifest:
    """The manifest, once ``note`` (manifest.sig) is a known key's signature of exactly these bytes."""
    try:
        body = verify_note(note, list(vkeys))
    except InvalidNote:
        raise BackupInvalid("manifest.sig is not a valid signature by a trusted notary key") from None
    lines = body.removesuffix("\n").split("\n")
    hashed = StreamDigest()
    hashed.update(manifest_json)
    if len(lines) != 3 or lines[0] != _MANIFEST_LINE or lines[2] != hashed.hexdigest():
        raise BackupInvalid("manifest.json does not match its signature")
    manifest = Manifest.from_json(manifest_json)
    if manifest.id != lines[1]:
        raise BackupInvalid("manifest.json does not match its signature")
    return manifest


# --- the sidecar -----------------------------------------------------------------


@dataclass(frozen=True)
class Sidecar:
    """``<name>.manifest``: the encrypted file's name, size and SHA-256 and its manifest.

    ``note`` is the whole signed text; ``read_sidecar`` does not check the
    signature (listing needs no keys): ``verify_sidecar`` does.
    """

    name: str
    size: int
    sha256: str
    manifest: Manifest
    manifest_json: bytes
    note: str


def sidecar_note(name: str, encrypted: Part, manifest_json: bytes, signer: Signer) -> str:
    """The signed sidecar text for the backup file ``name``."""
    return signer.sign(
        f"{_SIDECAR_LINE}\n{name}\n{encrypted.size}\n{encrypted.sha256}\n{manifest_json.decode('ascii')}\n"
    )


def parse_sidecar(data: bytes) -> Sidecar:
    """The sidecar's fields, unverified; BackupInvalid if it is not one."""
    if len(data) > MAX_MANIFEST_BYTES + 4096:
        raise BackupInvalid("the sidecar manifest is too large")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BackupInvalid("the sidecar manifest is not text") from None
    body, _, _signatures = text.rpartition("\n\n")
    lines = body.split("\n")
    if len(lines) != 5 or lines[0] != _SIDECAR_LINE or not lines[2].isdigit() or not _HEX64.fullmatch(lines[3]):
        raise BackupInvalid("the sidecar manifest is malformed")
    manifest_json = lines[4].encode("ascii", errors="replace")
    manifest = Manifest.from_json(manifest_json)
    if manifest.name != lines[1]:
        raise BackupInvalid("the sidecar manifest names another backup")
    return Sidecar(lines[1], int(lines[2]), lines[3], manifest, manifest_json, text)


def read_sidecar(path: Path) -> Sidecar:
    """Read and parse ``path`` (a ``.manifest`` file) without checking its signature."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BackupInvalid(f"{path.name}: no sidecar manifest (the backup is incomplete)") from None
    return parse_sidecar(data)


def check_sidecar(sidecar: Sidecar, vkeys: Iterable[str]) -> Manifest:
    """The sidecar's manifest once its signature is a trusted notary key's."""
    try:
        verify_note(sidecar.note, list(vkeys))
    except InvalidNote:
        raise BackupInvalid(f"{sidecar.name}.manifest is not signed by a trusted notary key") from None
    return sidecar.manifest


def verify_sidecar(
    backup_path: Path,
    keys: Iterable[str],
    progress: Callable[[int], None] | None = None,
    *,
    opened: BinaryIO | None = None,
) -> Manifest:
    """Check ``<backup_path>.manifest``'s signature with ``keys`` (note verifier keys from outside the
    backup), then the file's name, size and SHA-256 against it; the manifest, or BackupInvalid.

    ``opened``: the backup file already open (hashed from its start), so that whoever decrypts it
    next reads the very bytes hashed here, not a file swapped in under the same name."""
    sidecar = read_sidecar(backup_path.with_name(backup_path.name + SIDECAR_SUFFIX))
    manifest = check_sidecar(sidecar, keys)
    if sidecar.name != backup_path.name:
        raise BackupInvalid(f"{backup_path.name}: its sidecar manifest names {sidecar.name}")
    try:
        if opened is not None:
            opened.seek(0)
            actual = stream_digest(opened, progress)
        else:
            actual = file_digest(backup_path, progress)
    except FileNotFoundError:
        raise BackupInvalid(f"{backup_path.name}: the backup file is missing") from None
    if actual.size != sidecar.size:
        raise BackupInvalid(f"{backup_path.name}: {actual.size} bytes, the signed manifest says {sidecar.size}")
    if actual.sha256 != sidecar.sha256:
        raise BackupInvalid(f"{backup_path.name}: its SHA-256 differs from the signed manifest's")
    return manifest
