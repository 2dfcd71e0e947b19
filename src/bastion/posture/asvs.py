"""``bastion check --asvs``: each OWASP ASVS 5.0 requirement, and how Bastion meets it.

Four classes, adding up to every requirement of the shipped file
(``data/asvs-5.0.0.csv``, CC BY-SA 4.0, see data/ATTRIBUTION.md):

- ``code``: a test names it (``data/asvs-tests.json``, generated from the
  tests by scripts/build_asvs_map.py; a test fails when it is stale);
- ``configuration``: met by a setting that ``bastion check`` reports or
  ``serve`` refuses in prod (``data/asvs-classes.json`` says which);
- ``operator``: left to the deployment (its own documentation, or a feature
  Bastion does not have);
- ``not met``: none of the above. Saying so is the point of the report.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

CLASSES = ("code", "configuration", "operator", "not met")


class AsvsDataError(Exception):
    """The shipped ASVS files cannot be read (a broken installation)."""


@dataclass(frozen=True)
class Requirement:
    req_id: str
    level: str
    status: str  # one of CLASSES
    evidence: str  # the tests, or the reason

    def as_json(self) -> dict[str, Any]:
        return {"id": self.req_id, "level": self.level, "status": self.status, "evidence": self.evidence}


def _data(name: str) -> str:
    try:
        return resources.files("bastion.posture").joinpath("data", name).read_text(encoding="utf-8")
    except OSError as exc:
        raise AsvsDataError(f"the shipped {name} cannot be read ({exc})") from None


def classify() -> list[Requirement]:
    rows = list(csv.DictReader(io.StringIO(_data("asvs-5.0.0.csv"))))
    tests: dict[str, list[str]] = json.loads(_data("asvs-tests.json"))
    classes: dict[str, list[str]] = {k: v for k, v in json.loads(_data("asvs-classes.json")).items() if k[0] == "V"}
    result = []
    for row in rows:
        req = row["req_id"]
        if req in tests:
            result.append(Requirement(req, row["L"], "code", ", ".join(tests[req])))
            continue
        entry = classes.get(req) or classes.get(row["section_id"])
        if entry is not None:
            result.append(Requirement(req, row["L"], entry[0], entry[1]))
        else:
            result.append(
                Requirement(req, row["L"], "not met", "no test names it and no setting or operator duty covers it")
            )
    return result
