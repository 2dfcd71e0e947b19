"""schemathesis with every check against the served /openapi.json, signed in (V4.1.1, V4.2.x,
V8.2.1, V8.3.1, V16.5.x): each operation answers what the document says (status, content type,
body schema, Allow), protected operations refuse a request without the credential, and no
request produces a server error.

The run is time-boxed by its own ``--max-time`` (the phases repeat until it is spent). Its
summary is the result: as many cases passed as were generated, every phase green, and a
closing line that counts no failure and no error. tests/security/schemathesis.toml widens
two checks' expected statuses where HTTP or the data model requires it, each with its reason.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from security.attack import EMAIL, PASSWORD, ROOT, Target, run_tool

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent
BUDGET = 60  # seconds


def test_schemathesis_all_checks_pass(target: Target, tmp_path: Path) -> None:
    """V4.1.1 (the content type is declared and matches), V8.2.1 (a protected operation
    without a credential is refused), V16.5.x (no request makes a server error)."""
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
        "PYTHONPATH": str(HERE),
        "BASTION_TEST_SCAN_URL": target.url,
        "BASTION_TEST_SCAN_CA": str(target.ca),
        "BASTION_TEST_SCAN_EMAIL": EMAIL,
        "BASTION_TEST_SCAN_PASSWORD": PASSWORD,
        "NO_COLOR": "1",
    }
    output = run_tool(
        "schemathesis",
        [
            ROOT / ".venv" / "bin" / "schemathesis", "--config-file", HERE / "schemathesis.toml", "run",
            f"{target.url}/openapi.json", "--tls-verify", target.ca, "--checks", "all", "--max-time", str(BUDGET),
            "--workers", "2", "--seed", "1", "--no-color", "--report", "junit", "--report-dir", tmp_path,
        ],
        seconds=BUDGET + 60,
        env=env,
        cwd=tmp_path,
    )  # fmt: skip
    (tmp_path / "schemathesis.log").write_text(output)
    tested = re.search(r"Tested: (\d+)", output)
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    assert tested, output[-5000:]
    assert selected, output[-5000:]
    assert int(tested.group(1)) == int(selected.group(2)), output[-5000:]  # every operation was reached
    # "Test cases: N generated, N passed[, M skipped]": every generated case passed every check.
    cases = re.search(r"Test cases:\s+(\d+) generated, (\d+) passed", output)
    assert cases, output[-8000:]
    assert int(cases.group(1)) == int(cases.group(2)) >= 500, output[-8000:]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in output, output[-8000:]
    closing = output.strip().splitlines()[-1]  # "=== 3 warnings in 60.02s ===": no failures, no errors
    assert re.fullmatch(r"=+ (?:\d+ warnings? )?in [\d.]+s =+", closing), output[-8000:]
