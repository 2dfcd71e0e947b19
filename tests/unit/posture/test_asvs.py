"""The shipped ASVS files: the requirement -> test map is current, and the classes are sound."""

from __future__ import annotations

import json
from importlib import resources

from scripts.build_asvs_map import build, render

from bastion.posture.asvs import CLASSES, classify


def _data(name: str) -> str:
    return resources.files("bastion.posture").joinpath("data", name).read_text(encoding="utf-8")


def test_the_committed_map_is_current() -> None:
    """Fails when a test names a requirement the shipped map lacks (or no longer names one):
    run .venv/bin/python scripts/build_asvs_map.py and commit the map."""
    assert _data("asvs-tests.json") == render(build()), "run: .venv/bin/python scripts/build_asvs_map.py"


def test_every_requirement_has_one_class_and_each_entry_a_reason() -> None:
    rows = classify()
    assert len(rows) == len({row.req_id for row in rows}) == 345
    assert {row.status for row in rows} <= set(CLASSES)
    assert all(row.evidence for row in rows)
    known = {row.req_id for row in rows} | {row.req_id.rsplit(".", 1)[0] for row in rows}
    for key, (status, reason) in ((k, v) for k, v in json.loads(_data("asvs-classes.json")).items() if k[0] == "V"):
        assert key in known, key
        assert status in {"configuration", "operator"}, key
        assert len(reason) > 20, key
    tested = json.loads(_data("asvs-tests.json"))
    assert {row.req_id for row in rows if row.status == "code"} == set(tested)
