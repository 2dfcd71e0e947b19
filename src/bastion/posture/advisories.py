"""Dependency advisories, offline: OSV records matched against the installed distributions.

The database is the snapshot shipped in ``posture/data/advisories.json``
(built by scripts/build_advisories.py from the PyPA advisory database) merged
with what ``bastion advisories import`` kept in the data directory
(``advisories.json`` there), by advisory id: of two records with one id the
later ``modified`` wins, an import on a tie. Nothing here reaches the network:
``pip-audit`` offline reports "no known vulnerabilities" because it could not
ask, and a check that cannot read its database must say so, never pass.

Matching follows the OSV schema for the PyPI ecosystem: a version is affected
when it is in an affected package's ``versions`` list, or inside one of its
``ECOSYSTEM`` ranges (events ``introduced``, ``fixed``, ``last_affected``,
ordered by PEP 440 with ``packaging``). ``GIT`` and ``SEMVER`` ranges are not
about PyPI versions and are ignored, and so are withdrawn advisories.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

SNAPSHOT_FORMAT = "bastion-advisories/v1"
IMPORTED_NAME = "advisories.json"  # in the data directory
STALE_AFTER = dt.timedelta(days=30)
SUMMARY_LIMIT = 160
MAX_IMPORT_BYTES = 512 * 1024 * 1024  # an osv.dev export of all of PyPI is ~100 MB unzipped


class AdvisoryFileError(Exception):
    """An advisory file that is not OSV JSON (or a zip of it): one line naming what is wrong."""


@dataclass(frozen=True)
class Match:
    package: str
    version: str
    advisory: str
    aliases: tuple[str, ...]
    summary: str
    fixed: str | None  # the first fixed version above the installed one, if the advisory names one


@dataclass(frozen=True)
class AdvisoryDatabase:
    records: dict[str, dict[str, Any]]  # id -> OSV record (compact)
    # The newest of the shipped snapshot's date and the last import of a whole export
    # (a zip), never later than now: one fresh advisory does not date the rest.
    date: dt.datetime
    shipped_date: dt.datetime
    imported: int  # records from the data directory

    def by_package(self) -> dict[str, list[dict[str, Any]]]:
        index: dict[str, list[dict[str, Any]]] = {}
        for record in self.records.values():
            if record.get("withdrawn"):
                continue
            for name in {canonicalize_name(a["package"]["name"]) for a in record["affected"]}:
                index.setdefault(name, []).append(record)
        return index


def _parse_time(text: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


# -- reading OSV ----------------------------------------------------------------------------------


def compact_record(record: Any, where: str) -> dict[str, Any] | None:  # noqa: PLR0912 - one check per field
    """The PyPI part of one OSV record, in the shape the snapshot keeps; None if it has none."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str) or not record["id"]:
        raise AdvisoryFileError(f"{where}: not an OSV record (no id)")
    if not isinstance(record.get("affected", []), list):
        raise AdvisoryFileError(f"{where}: {record['id']}: 'affected' is not a list")
    affected = []
    for item in record.get("affected") or []:
        package = item.get("package") if isinstance(item, dict) else None
        if not isinstance(package, dict) or package.get("ecosystem") != "PyPI":
            continue
        if not isinstance(package.get("name"), str):
            raise AdvisoryFileError(f"{where}: {record['id']}: an affected package has no name")
        ranges = []
        for entry in item.get("ranges") or []:
            if not isinstance(entry, dict) or entry.get("type") != "ECOSYSTEM":
                continue
            events = entry.get("events")
            if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
                raise AdvisoryFileError(f"{where}: {record['id']}: a range has no list of events")
            ranges.append({"type": "ECOSYSTEM", "events": [{str(k): str(v) for k, v in e.items()} for e in events]})
        versions = item.get("versions") or []
        if not isinstance(versions, list):
            raise AdvisoryFileError(f"{where}: {record['id']}: 'versions' is not a list")
        if ranges or versions:
            affected.append(
                {"package": {"ecosystem": "PyPI", "name": package["name"]}, "ranges": ranges,
                 "versions": [str(v) for v in versions]}
            )  # fmt: skip
    if not affected:
        return None
    modified = record.get("modified")
    try:
        _parse_time(str(modified))
    except ValueError:
        raise AdvisoryFileError(f"{where}: {record['id']}: 'modified' is not an RFC 3339 time") from None
    compact: dict[str, Any] = {
        "id": record["id"],
        "modified": str(modified),
        "aliases": [str(a) for a in record.get("aliases") or []],
        "summary": _summary(record),
        "affected": affected,
    }
    if record.get("withdrawn"):
        compact["withdrawn"] = str(record["withdrawn"])
    return compact


def _summary(record: dict[str, Any]) -> str:
    """One line of at most SUMMARY_LIMIT characters: the summary, else the start of the details."""
    text = " ".join(str(record.get("summary") or record.get("details") or "").split())
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1].rstrip() + "…"


def _records_of_json(data: bytes, where: str) -> list[Any]:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise AdvisoryFileError(f"{where}: not JSON ({exc})") from None
    if isinstance(document, dict) and document.get("format") == SNAPSHOT_FORMAT:
        advisories = document.get("advisories")
        if not isinstance(advisories, list):
            raise AdvisoryFileError(f"{where}: a snapshot without a list of advisories")
        return advisories
    if isinstance(document, list):
        return document
    return [document]


def read_osv(path: Path) -> list[dict[str, Any]]:
    """The PyPI advisories of an OSV file: one record, an array of them, or a zip of such files.

    AdvisoryFileError (one line) for anything else, or when not one record in it is about PyPI.
    """
    try:
        size = path.stat().st_size
        if size > MAX_IMPORT_BYTES:
            raise AdvisoryFileError(f"{path}: larger than {MAX_IMPORT_BYTES // 2**20} MiB")
        data = path.read_bytes()
    except OSError as exc:
        raise AdvisoryFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    raw: list[tuple[Any, str]] = []
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                total = 0
                for info in archive.infolist():
                    if info.is_dir() or not info.filename.endswith(".json"):
                        continue
                    total += info.file_size
                    if total > MAX_IMPORT_BYTES:  # a zip bomb stops here, not in memory
                        raise AdvisoryFileError(f"{path}: unzips to more than {MAX_IMPORT_BYTES // 2**20} MiB")
                    where = f"{path}:{info.filename}"
                    raw += [(r, where) for r in _records_of_json(archive.read(info), where)]
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise AdvisoryFileError(f"{path}: not a readable zip ({exc})") from None
    else:
        raw = [(r, str(path)) for r in _records_of_json(data, str(path))]
    records = [c for r, where in raw if (c := compact_record(r, where)) is not None]
    if not records:
        raise AdvisoryFileError(f"{path}: holds no advisory for the PyPI ecosystem")
    return records


# -- the database ---------------------------------------------------------------------------------


def _newer(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Of two records with one id, the later ``modified``; ``b`` on a tie."""
    return a if _parse_time(a["modified"]) > _parse_time(b["modified"]) else b


def load_snapshot(path: Path | None = None) -> dict[str, Any]:
    """The shipped snapshot (or ``path``); AdvisoryFileError when it is unreadable or empty."""
    where = str(path) if path else "the shipped advisory snapshot"
    try:
        if path is None:
            data = resources.files("bastion.posture").joinpath("data", "advisories.json").read_bytes()
        else:
            data = path.read_bytes()
        document = json.loads(data)
        date = _parse_time(document["date"])
        advisories = document["advisories"]
        if document.get("format") != SNAPSHOT_FORMAT or not isinstance(advisories, list):
            raise ValueError("not a Bastion advisory snapshot")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AdvisoryFileError(f"{where} cannot be read: {exc}") from None
    if not advisories:
        raise AdvisoryFileError(f"{where} is empty: no advisory to compare with")
    return {"date": date, "advisories": advisories}


def imported_path(data_dir: Path) -> Path:
    return data_dir / IMPORTED_NAME


def _read_imported(data_dir: Path) -> tuple[list[dict[str, Any]], dt.datetime | None]:
    """The imported records and when a whole export (a zip) was last imported."""
    path = imported_path(data_dir)
    if not path.exists():
        return [], None
    data = _read_bytes(path)
    records = [c for r in _records_of_json(data, str(path)) if (c := compact_record(r, str(path)))]
    try:
        full = json.loads(data).get("full_import_at")
        return records, _parse_time(full) if full else None
    except (AttributeError, ValueError, TypeError):
        return records, None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AdvisoryFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def open_database(data_dir: Path, *, snapshot: Path | None = None, now: dt.datetime | None = None) -> AdvisoryDatabase:
    """The shipped snapshot merged with the data directory's imports; AdvisoryFileError if unreadable."""
    shipped = load_snapshot(snapshot)
    records: dict[str, dict[str, Any]] = {}
    for record in shipped["advisories"]:
        records[record["id"]] = record
    imported, full_import = _read_imported(data_dir)
    for record in imported:
        known = records.get(record["id"])
        records[record["id"]] = record if known is None else _newer(known, record)
    # Not the newest `modified` imported: one fresh (or future-dated) advisory would
    # date a months-old snapshot. A whole export imported is as current as its import.
    date = min(max(shipped["date"], full_import or shipped["date"]), now or dt.datetime.now(dt.UTC))
    return AdvisoryDatabase(records=records, date=date, shipped_date=shipped["date"], imported=len(imported))


def import_file(data_dir: Path, source: Path, *, now: dt.datetime | None = None) -> tuple[int, int]:
    """Merge the advisories of ``source`` into the data directory's file; (read, now kept).

    A zip is taken for a whole export (osv.dev's ``all.zip``): its import
    (``now``) dates the database; single records and arrays do not.

    The file is read and checked whole before anything is written, and
    replaced atomically (a temporary file of its own, fsync, rename): a
    corrupt source changes nothing. Two imports at once take turns (an
    exclusive lock on a file beside it), so neither loses the other's records.
    """
    incoming = read_osv(source)
    with source.open("rb") as handle:
        whole = handle.read(4) == b"PK\x03\x04"
    target = imported_path(data_dir)
    with (data_dir / f".{IMPORTED_NAME}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        known_records, full_import = _read_imported(data_dir)
        kept = {r["id"]: r for r in known_records}
        if whole:
            full_import = now or dt.datetime.now(dt.UTC)
        for record in incoming:
            known = kept.get(record["id"])
            kept[record["id"]] = record if known is None else _newer(known, record)
        text = json.dumps(
            {"format": SNAPSHOT_FORMAT, "source": "bastion advisories import",
             "date": max(r["modified"] for r in kept.values()),
             **({"full_import_at": full_import.isoformat()} if full_import else {}),
             "advisories": sorted(kept.values(), key=lambda r: r["id"])},
            ensure_ascii=False, separators=(",", ":"), sort_keys=True,
        )  # fmt: skip
        descriptor, partial = tempfile.mkstemp(dir=data_dir, prefix=f".{IMPORTED_NAME}.", suffix=".partial")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            Path(partial).replace(target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
    return len(incoming), len(kept)


# -- matching -------------------------------------------------------------------------------------


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def in_range(version: Version, events: list[dict[str, str]]) -> tuple[bool, str | None]:
    """Whether ``version`` is inside one OSV ECOSYSTEM range, and the range's next fixed version.

    The OSV evaluation: events sorted by version; the version is affected
    after an ``introduced`` at or below it, until a ``fixed`` at or below it
    (or a ``last_affected`` below it).
    """
    points: list[tuple[Version, int, str, str]] = []
    for event in events:
        for kind, text in event.items():
            at = Version("0") if kind == "introduced" and text == "0" else _version(text)
            if at is None or kind not in {"introduced", "fixed", "last_affected"}:
                continue
            points.append((at, {"introduced": 1, "fixed": 0, "last_affected": 2}[kind], kind, text))
    points.sort()
    affected, fixed = False, None
    for at, _, kind, text in points:
        if kind == "introduced" and at <= version:
            affected = True
        elif (kind == "fixed" and at <= version) or (kind == "last_affected" and at < version):
            affected = False
        elif kind == "fixed" and at > version and affected and fixed is None:
            fixed = text
    return affected, fixed if affected else None


def affects(record: dict[str, Any], name: str, version_text: str) -> tuple[bool, str | None]:
    """Whether ``record`` affects ``name`` at ``version_text``, and the first fixed version above it."""
    wanted = canonicalize_name(name)
    version = _version(version_text)
    for item in record["affected"]:
        if canonicalize_name(item["package"]["name"]) != wanted:
            continue
        listed = version_text in item["versions"] or (
            version is not None and any(v == version for v in map(_version, item["versions"]) if v is not None)
        )
        fixed = None
        ranged = False
        if version is not None:
            for entry in item["ranges"]:
                inside, next_fixed = in_range(version, entry["events"])
                if inside:
                    ranged = True
                    fixed = fixed or next_fixed
        if listed or ranged:
            return True, fixed
    return False, None


def installed(paths: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(name, version) of every distribution installed on ``paths`` (default: this interpreter's sys.path)."""
    found: dict[str, tuple[str, str]] = {}
    distributions = metadata.distributions(path=list(paths)) if paths is not None else metadata.distributions()
    for dist in distributions:
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), (name, dist.version))  # the first on the path is imported
    return sorted(found.values(), key=lambda item: canonicalize_name(item[0]))


def match(database: AdvisoryDatabase, distributions: Iterable[tuple[str, str]]) -> list[Match]:
    index = database.by_package()
    matches = []
    for name, version in distributions:
        for record in index.get(canonicalize_name(name), []):
            hit, fixed = affects(record, name, version)
            if hit:
                matches.append(Match(name, version, record["id"], tuple(record["aliases"]), record["summary"], fixed))
    return sorted(matches, key=lambda m: (canonicalize_name(m.package), m.advisory))


def site_paths(environment: Path) -> list[str]:
    """The site-packages of a virtual environment (its root), or ``environment`` itself if it is one."""
    if (environment / "pyvenv.cfg").is_file():
        found = sorted(str(p) for p in environment.glob("lib/python*/site-packages") if p.is_dir())
        found += sorted(str(p) for p in environment.glob("Lib/site-packages") if p.is_dir())
        if found:
            return found
    if environment.is_dir():
        return [str(environment)]
    raise AdvisoryFileError(f"{environment}: not a virtual environment or a site-packages directory")
