"""OSV matching (PEP 440 ranges and versions lists), reading OSV files, and the advisory
database's date and failure modes. A distribution is planted as a real dist-info directory,
read by importlib.metadata as an installed one is."""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from bastion.posture import advisories
from bastion.posture.advisories import AdvisoryFileError, affects, installed, match, open_database, read_osv
from bastion.posture.report import advisory_findings
from bastion.settings import load_settings


def osv(ident: str, name: str, events: list[dict[str, str]], *, versions: list[str] | None = None,
        modified: str = "2026-01-01T00:00:00Z", **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "id": ident,
        "modified": modified,
        "summary": f"{name} is broken",
        "aliases": [f"CVE-{ident}"],
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": name},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
                "versions": versions or [],
            }
        ],
        **extra,
    }


def plant(site: Path, name: str, version: str) -> None:
    dist = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


TWO_RANGES = [{"introduced": "1.0"}, {"fixed": "1.4"}, {"introduced": "2.0"}, {"fixed": "2.1.3"}]


@pytest.mark.parametrize(
    ("events", "version", "expected"),
    [
        ([{"introduced": "0"}, {"fixed": "2.7.2"}], "2.7.1", (True, "2.7.2")),
        ([{"introduced": "0"}, {"fixed": "2.7.2"}], "2.7.2", (False, None)),
        ([{"introduced": "0"}, {"fixed": "2.7.2"}], "2.10", (False, None)),  # PEP 440 order, not text
        (TWO_RANGES, "1.5", (False, None)),
        (TWO_RANGES, "2.1rc1", (True, "2.1.3")),
        ([{"introduced": "1.0"}, {"fixed": "1.4"}], "0.9", (False, None)),
        ([{"introduced": "0"}, {"last_affected": "3.2"}], "3.2", (True, None)),
        ([{"introduced": "0"}, {"last_affected": "3.2"}], "3.2.1", (False, None)),
        ([{"introduced": "0"}], "99", (True, None)),
    ],
)
def test_ecosystem_ranges(events: list[dict[str, str]], version: str, expected: tuple[bool, str | None]) -> None:
    record = advisories.compact_record(osv("X-1", "Some_Pkg", events), "test")
    assert record is not None
    assert affects(record, "some-pkg", version) == expected


def test_versions_list_and_withdrawn() -> None:
    listed = advisories.compact_record(osv("X-2", "pkg", [], versions=["1.0", "1.1"]), "t")
    assert listed is not None
    assert affects(listed, "pkg", "1.1")[0]
    assert not affects(listed, "pkg", "1.2")[0]
    assert not affects(listed, "other", "1.1")[0]


def test_read_osv_single_array_and_zip(tmp_path: Path) -> None:
    one, two = osv("A-1", "pkg", [{"introduced": "0"}]), osv("A-2", "pkg", [{"introduced": "0"}])
    npm = {"id": "N-1", "modified": "2026-01-01T00:00:00Z", "affected": [{"package": {"ecosystem": "npm"}}]}
    (tmp_path / "one.json").write_text(json.dumps(one))
    (tmp_path / "many.json").write_text(json.dumps([one, two, npm]))
    with zipfile.ZipFile(tmp_path / "all.zip", "w") as archive:
        archive.writestr("A-1.json", json.dumps(one))
        archive.writestr("A-2.json", json.dumps(two))
        archive.writestr("N-1.json", json.dumps(npm))
    assert [r["id"] for r in read_osv(tmp_path / "one.json")] == ["A-1"]
    assert [r["id"] for r in read_osv(tmp_path / "many.json")] == ["A-1", "A-2"]  # npm left out
    assert sorted(r["id"] for r in read_osv(tmp_path / "all.zip")) == ["A-1", "A-2"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not JSON"),
        (b"PK\x03\x04garbage", "not a readable zip"),
        (b'[{"summary": "no id"}]', "no id"),
        (b'{"id": "X", "modified": "yesterday", "affected": [{"package": {"ecosystem": "PyPI", "name": "p"},'
         b' "versions": ["1"]}]}', "RFC 3339"),
        (b"[]", "no advisory for the PyPI ecosystem"),
    ],
)  # fmt: skip
def test_corrupt_advisory_files_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(AdvisoryFileError, match=message):
        read_osv(path)


def test_the_shipped_snapshot_finds_a_planted_vulnerable_version(tmp_path: Path) -> None:
    """V15.2.1: a dependency with a known advisory is reported with its id and fixed version.
    python-gnupg 0.4.3 has CVE-2019-6690 (PYSEC-2019-115), fixed in 0.4.4."""
    site = tmp_path / "site"
    plant(site, "python-gnupg", "0.4.3")
    plant(site, "Jinja2", "3.1.6")
    database = open_database(tmp_path)
    assert database.shipped_date.year >= 2024
    assert len(database.records) > 1000
    found = match(database, installed([str(site)]))
    assert [(m.package, m.version, m.advisory, m.fixed) for m in found] == [
        ("python-gnupg", "0.4.3", "PYSEC-2019-115", "0.4.4")
    ]
    assert "CVE-2019-6690" in found[0].aliases


def test_imports_merge_by_id_and_the_later_modified_wins(tmp_path: Path) -> None:
    first = osv("Z-1", "pkg", [{"introduced": "0"}, {"fixed": "2.0"}], modified="2026-01-01T00:00:00Z")
    newer = osv("Z-1", "pkg", [{"introduced": "0"}, {"fixed": "3.0"}], modified="2026-02-01T00:00:00Z")
    older = osv("Z-1", "pkg", [{"introduced": "0"}, {"fixed": "1.0"}], modified="2025-01-01T00:00:00Z")
    for name, record in (("a.json", first), ("b.json", newer), ("c.json", older)):
        (tmp_path / name).write_text(json.dumps(record))
        advisories.import_file(tmp_path, tmp_path / name)
    database = open_database(tmp_path)
    assert database.imported == 1
    [hit] = match(database, [("pkg", "2.5")])
    assert hit.fixed == "3.0"
    assert database.date == database.shipped_date  # single records do not date the database


def test_one_fresh_advisory_does_not_date_a_stale_database_a_whole_export_does(tmp_path: Path) -> None:
    """V15.2.1 (components checked against current advisories): a single advisory, even
    dated in the future, leaves the database as old as its snapshot (still a warning);
    importing a whole export (a zip, as osv.dev's all.zip) dates it by the import,
    and no date is ever later than now."""
    shipped = open_database(tmp_path).shipped_date
    later = shipped + dt.timedelta(days=90)
    future = osv("F-1", "pkg", [{"introduced": "0"}], modified=f"{later.year + 5}-01-01T00:00:00Z")
    (tmp_path / "one.json").write_text(json.dumps(future))
    advisories.import_file(tmp_path, tmp_path / "one.json", now=later)
    assert open_database(tmp_path, now=later).date == shipped
    with zipfile.ZipFile(tmp_path / "all.zip", "w") as archive:
        archive.writestr("F-1.json", json.dumps(future))
    advisories.import_file(tmp_path, tmp_path / "all.zip", now=later)
    assert open_database(tmp_path, now=later + dt.timedelta(days=1)).date == later
    assert open_database(tmp_path, now=later - dt.timedelta(days=1)).date == later - dt.timedelta(days=1)


def test_empty_or_unreadable_database_is_an_error_never_a_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(tmp_path / "data")
    settings.data_dir.mkdir()
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"format": "bastion-advisories/v1", "date": "2026-01-01T00:00:00Z", "advisories": []}))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    real = advisories.load_snapshot
    for path, words in ((empty, "is empty"), (broken, "cannot be read")):
        monkeypatch.setattr(advisories, "load_snapshot", lambda _=None, p=path: real(p))
        [finding] = advisory_findings(settings, dt.datetime.now(dt.UTC), site=[str(tmp_path)])
        assert finding.severity == "error"
        assert words in finding.message
    # A corrupt file of imports is an error too, not a silent fall-back to the snapshot alone.
    monkeypatch.setattr(advisories, "load_snapshot", real)
    (settings.data_dir / "advisories.json").write_text("[{")
    [finding] = advisory_findings(settings, dt.datetime.now(dt.UTC), site=[str(tmp_path)])
    assert finding.severity == "error"


def test_the_snapshot_date_is_reported_and_old_is_a_warning(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "data")
    shipped = open_database(tmp_path).shipped_date
    fresh = advisory_findings(settings, shipped + dt.timedelta(days=29), site=[str(tmp_path)])
    assert [(f.severity, f.setting) for f in fresh] == [("info", "advisories")]
    assert f"dated {shipped:%Y-%m-%d}" in fresh[0].message
    [stale] = advisory_findings(settings, shipped + dt.timedelta(days=31), site=[str(tmp_path)])
    assert stale.severity == "warning"
    assert "31 days old" in stale.message


def test_concurrent_imports_keep_every_record(tmp_path: Path) -> None:
    """Eight imports at once, each of its own advisory: all eight are kept (none lost to a race)."""
    from concurrent.futures import ThreadPoolExecutor

    sources = []
    for n in range(8):
        path = tmp_path / f"{n}.json"
        path.write_text(json.dumps(osv(f"C-{n}", "pkg", [{"introduced": "0"}])))
        sources.append(path)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda source: advisories.import_file(tmp_path, source), sources))
    assert sorted(open_database(tmp_path).records.keys() & {f"C-{n}" for n in range(8)}) == [f"C-{n}" for n in range(8)]
    assert not list(tmp_path.glob(".advisories.json.*.partial"))
