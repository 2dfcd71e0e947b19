"""Build the advisory snapshot Bastion ships: src/bastion/posture/data/advisories.json.

Usage: .venv/bin/python scripts/build_advisories.py SOURCE [--out FILE]

SOURCE is the PyPA advisory database (https://github.com/pypa/advisory-database):
a checkout (a directory with vulns/) or a bare git directory, read with
``git ls-tree`` and ``git cat-file`` at HEAD. Its YAML files are OSV records;
the snapshot keeps, of every PyPI advisory, only what ``bastion check --deps``
matches and prints (id, aliases, summary, modified, withdrawn, and per affected
package its name, ECOSYSTEM ranges and versions list), as one JSON document
in the OSV shape, so the same reader takes it and an osv.dev export
(``bastion advisories import``). The snapshot's date is the database's last
commit (a checkout without git: the newest ``modified``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from packaging.version import InvalidVersion, Version

from bastion.posture.advisories import compact_record, in_range


def _git(source: Path, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(  # noqa: S603 - a fixed git command on a path we were given
        ["git", "--git-dir", str(source), *args],  # noqa: S607 - git from PATH, as the developer runs it
        input=data,
        capture_output=True,
        check=True,
    ).stdout


def _documents_from_git(source: Path) -> tuple[list[Any], str, str]:
    listing = _git(source, "ls-tree", "-r", "HEAD", "vulns").decode()
    blobs = [line.split()[2] for line in listing.splitlines() if line.endswith((".yaml", ".yml", ".json"))]
    batch = _git(source, "cat-file", "--batch", data="".join(f"{b}\n" for b in blobs).encode())
    documents, at = [], 0
    while at < len(batch):
        header_end = batch.index(b"\n", at)
        size = int(batch[at:header_end].split()[2])
        body = batch[header_end + 1 : header_end + 1 + size]
        documents.append(yaml.safe_load(body))
        at = header_end + 1 + size + 1
    commit, date = _git(source, "log", "-1", "--format=%H %cI", "HEAD").decode().split()
    return documents, commit, date


def _documents_from_checkout(source: Path) -> list[Any]:
    return [
        yaml.safe_load(path.read_bytes())
        for path in sorted((source / "vulns").rglob("*"))
        if path.suffix in {".yaml", ".yml", ".json"}
    ]


def _covered(version: str, ranges: list[dict[str, Any]]) -> bool:
    """Whether a listed version is inside one of the ranges already (then the list need not name it)."""
    try:
        parsed = Version(version)
    except InvalidVersion:
        return False
    return any(in_range(parsed, r["events"])[0] for r in ranges)


def compact(document: dict[str, Any], where: str) -> dict[str, Any] | None:
    """What the matcher needs of one OSV record (Bastion's own reader), without the listed
    versions the ranges already cover: the same verdicts in a tenth of the size."""
    record = compact_record(document, where)
    if record is None:
        return None
    for item in record["affected"]:
        item["versions"] = [v for v in item["versions"] if not _covered(v, item["ranges"])]
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--out", type=Path, default=Path("src/bastion/posture/data/advisories.json"))
    args = parser.parse_args()
    if (args.source / "vulns").is_dir():
        documents, commit = _documents_from_checkout(args.source), None
        date = None
    else:
        documents, commit, date = _documents_from_git(args.source)
    records = sorted(
        (r for d in documents if isinstance(d, dict) and (r := compact(d, "vulns"))), key=lambda r: r["id"]
    )
    if date is None:
        date = max(r["modified"] for r in records)
    snapshot = {
        "format": "bastion-advisories/v1",
        "source": "https://github.com/pypa/advisory-database",
        "commit": commit,
        "date": date,
        "advisories": records,
    }
    text = json.dumps(snapshot, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    args.out.write_text(text + "\n", encoding="utf-8")
    packages = {a["package"]["name"].lower() for r in records for a in r["affected"]}
    print(f"{args.out}: {len(records)} advisories, {len(packages)} packages, {len(text)} bytes, dated {date}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
