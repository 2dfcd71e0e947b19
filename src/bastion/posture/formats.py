"""The machine-readable forms of the posture report: one JSON document, or SARIF 2.1.0."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bastion.posture.finding import Finding

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
# SARIF's result levels (§3.27.10): an info finding is a "note".
_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def as_json(findings: Sequence[Finding]) -> list[dict[str, str]]:
    """The findings as one JSON array of ``{id, severity, title, detail}``."""
    return [finding.as_json() for finding in findings]


def as_sarif(findings: Sequence[Finding], *, version: str, data_dir: Path) -> dict[str, Any]:
    """One SARIF run: a rule per finding id, a result per finding. Each result is located at the
    instance's bastion.toml (relative to DATA_DIR): these are findings about a deployment, not
    about source lines, and SARIF consumers want a location for every result."""
    location = {"physicalLocation": {"artifactLocation": {"uri": "bastion.toml", "uriBaseId": "DATA_DIR"}}}
    rules: dict[str, dict[str, Any]] = {}
    for finding in findings:
        rules.setdefault(finding.setting, {"id": finding.setting, "shortDescription": {"text": finding.message}})
    return {
        "version": "2.1.0",
        "$schema": SARIF_SCHEMA,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "bastion check",
                        "version": version,
                        "rules": list(rules.values()),
                    }
                },
                "originalUriBaseIds": {"DATA_DIR": {"uri": data_dir.resolve().as_uri() + "/"}},
                "results": [
                    {
                        "ruleId": finding.setting,
                        "level": _SARIF_LEVEL[finding.severity],
                        "message": {"text": f"{finding.message}; {finding.fix}" if finding.fix else finding.message},
                        "locations": [location],
                    }
                    for finding in findings
                ],
            }
        ],
    }
