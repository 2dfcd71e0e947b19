"""Write src/bastion/posture/data/asvs-tests.json: each ASVS requirement id -> the tests that name it.

Usage: .venv/bin/python scripts/build_asvs_map.py [--check]

A test names a requirement in its docstring (``V6.3.1``) or its name
(``test_v2_4_1_...``); a module docstring's ids are mapped to the module.
Only ids of the shipped ASVS file count, and only full requirement ids
(V6.3.1), not sections. An installed Bastion has no tests, so the map is
shipped; tests/unit/posture/test_asvs.py fails when the committed map is
stale. ``--check`` exits 1 instead of writing when the file would change.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "src" / "bastion" / "posture" / "data"
MAP = DATA / "asvs-tests.json"
_IN_TEXT = re.compile(r"\bV(\d{1,2})\.(\d{1,2})\.(\d{1,2})\b")
_IN_NAME = re.compile(r"(?:^|_)v(\d{1,2})_(\d{1,2})_(\d{1,2})(?=_|$)")


def requirement_ids() -> set[str]:
    with (DATA / "asvs-5.0.0.csv").open(encoding="utf-8", newline="") as handle:
        return {row["req_id"] for row in csv.DictReader(handle)}


def _ids(text: str, pattern: re.Pattern[str]) -> set[str]:
    return {"V{}.{}.{}".format(*m.groups()) for m in pattern.finditer(text)}


def build(tests: Path = ROOT / "tests") -> dict[str, list[str]]:
    known = requirement_ids()
    found: dict[str, set[str]] = {}
    for path in sorted(tests.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module_ids = _ids(ast.get_docstring(tree) or "", _IN_TEXT)
        where = path.relative_to(tests.parent).as_posix()
        for req in module_ids & known:  # the module's tests together prove it: name the module
            found.setdefault(req, set()).add(where)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                ids = _ids(ast.get_docstring(node) or "", _IN_TEXT) | _ids(node.name, _IN_NAME)
                for req in ids & known:
                    found.setdefault(req, set()).add(f"{where}::{node.name}")
    return {req: sorted(found[req]) for req in sorted(found, key=lambda r: tuple(int(p) for p in r[1:].split(".")))}


def render(mapping: dict[str, list[str]]) -> str:
    return json.dumps(mapping, indent=1, sort_keys=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed map is stale")
    args = parser.parse_args()
    text = render(build())
    if args.check:
        if not MAP.exists() or MAP.read_text(encoding="utf-8") != text:
            print(f"{MAP} is stale: run .venv/bin/python scripts/build_asvs_map.py", file=sys.stderr)
            return 1
        return 0
    MAP.write_text(text, encoding="utf-8")
    print(f"{MAP}: {len(json.loads(text))} requirements proven by tests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
