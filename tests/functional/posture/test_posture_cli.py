"""``bastion check`` (text, json, sarif, --deps, --asvs), ``advisories import`` and ``sbom`` through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli import app


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("posture") / "data"
    assert run("init", "--data-dir", str(directory))[0] == 0
    return directory


def fingerprint(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_check_json_is_one_document_of_findings(data: Path) -> None:
    code, out, _ = run("check", "--data-dir", str(data), "--format", "json")
    findings = json.loads(out)
    assert isinstance(findings, list)
    assert findings
    for finding in findings:
        assert set(finding) == {"id", "severity", "title", "detail"}
        assert finding["severity"] in {"error", "warning", "info"}
    ids = {f["id"] for f in findings}
    assert {"transport", "mode", "backups.recipients", "audit", "advisories"} <= ids
    assert code == (1 if any(f["severity"] == "error" for f in findings) else 0)


def test_check_sarif(data: Path) -> None:
    _, out, _ = run("check", "--data-dir", str(data), "--format", "sarif")
    sarif = json.loads(out)
    assert sarif["version"] == "2.1.0"
    [run_] = sarif["runs"]
    rules = {rule["id"] for rule in run_["tool"]["driver"]["rules"]}
    assert {result["ruleId"] for result in run_["results"]} <= rules
    assert {result["level"] for result in run_["results"]} <= {"error", "warning", "note"}
    assert run_["originalUriBaseIds"]["DATA_DIR"]["uri"] == data.resolve().as_uri() + "/"
    where = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in run_["results"]}
    assert where == {"bastion.toml"}


def test_check_text_ends_with_the_counts(data: Path) -> None:
    _, out, _ = run("check", "--data-dir", str(data))
    assert out.rstrip().splitlines()[-1].endswith("warning(s)")


def test_advisories_import_then_check_deps_names_the_package(data: Path, tmp_path: Path) -> None:
    """V15.2.1: an imported advisory about an installed distribution (here pytest itself, a test
    dependency: those count too) makes check --deps name package, version, id and fix, exit 1."""
    from importlib import metadata

    version = metadata.version("pytest")
    record = {
        "id": "BASTION-TEST-1",
        "modified": "2099-01-01T00:00:00Z",
        "summary": "planted for the test",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "pytest"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "999.0"}]}],
                "versions": [],
            }
        ],
    }
    export = tmp_path / "osv.zip"
    with zipfile.ZipFile(export, "w") as archive:
        archive.writestr("BASTION-TEST-1.json", json.dumps(record))
    scratch = tmp_path / "data"
    assert run("init", "--data-dir", str(scratch))[0] == 0
    code, out, err = run("advisories", "import", str(export), "--data-dir", str(scratch))
    assert code == 0, err
    assert "imported 1 advisories" in out
    code, out, _ = run("check", "--deps", "--data-dir", str(scratch), "--format", "json")
    assert code == 1
    findings = json.loads(out)
    [hit] = [f for f in findings if f["id"] == "advisories.BASTION-TEST-1"]
    assert hit["severity"] == "error"
    assert f"pytest {version} is affected by BASTION-TEST-1" in hit["title"]
    assert hit["detail"] == "upgrade pytest to 999.0 or later"
    [summary] = [f for f in findings if f["id"] == "advisories"]
    # A whole export (a zip) dates the database by its import, not by its newest `modified`.
    assert "dated 2099" not in summary["title"]
    assert summary["severity"] == "info"


@pytest.mark.parametrize(
    ("name", "content"),
    [("broken.json", b'{"id": '), ("broken.zip", b"PK\x03\x04not a zip"), ("npm.json", b"[]"), ("missing", None)],
)
def test_corrupt_advisory_file_is_one_line_and_changes_nothing(
    data: Path, tmp_path: Path, name: str, content: bytes | None
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    before = fingerprint(data)
    code, _, err = run("advisories", "import", str(path), "--data-dir", str(data))
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: {path}")
    assert fingerprint(data) == before


def test_sbom_is_cyclonedx_of_every_distribution(tmp_path: Path) -> None:
    from importlib import metadata

    target = tmp_path / "bom.json"
    code, _out, err = run("sbom", "--out", str(target))
    assert code == 0, err
    bom = json.loads(target.read_text())
    assert bom["bomFormat"] == "CycloneDX"
    assert tuple(int(p) for p in bom["specVersion"].split(".")) >= (1, 5)
    assert bom["metadata"]["component"]["name"] == "bastion"
    components = {c["name"].lower(): c["version"] for c in bom["components"]}
    for dist in metadata.distributions():
        name = dist.metadata["Name"].lower()
        if name != "bastion":
            assert components.get(name) == dist.version, name
    assert all(c["purl"].startswith("pkg:pypi/") for c in bom["components"])


def test_sbom_to_an_unwritable_path_is_one_line(tmp_path: Path) -> None:
    code, _, err = run("sbom", "--out", str(tmp_path / "no" / "such" / "dir" / "bom.json"))
    assert code == 2
    assert err.count("\n") == 1
    assert "cannot be written" in err
    assert not (tmp_path / "no").exists()


def test_check_asvs_ends_with_four_counts_adding_to_the_file() -> None:
    import csv
    from importlib import resources

    rows = list(csv.DictReader(resources.files("bastion.posture").joinpath("data", "asvs-5.0.0.csv").open()))
    code, out, _ = run("check", "--asvs")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == len(rows) + 1
    last = lines[-1]
    numbers = [int(part.split(":")[1].strip().split(" ")[0]) for part in last.split(",")]
    assert len(numbers) == 4
    assert sum(numbers) == len(rows)
    assert f"(of {len(rows)} requirements)" in last
    statuses = {line.split("\t")[1] for line in lines[:-1]}
    assert statuses <= {"code", "configuration", "operator", "not met"}


@pytest.mark.e2e
def test_check_deps_reports_a_planted_vulnerable_version_in_a_real_venv(data: Path, tmp_path: Path) -> None:
    """V15.2.1: a scratch virtual environment with python-gnupg 0.4.3 (CVE-2019-6690) installed from
    the registry by pip is reported by `check --deps --environment`, exit 1."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
         "--no-deps", "--disable-pip-version-check", "python-gnupg==0.4.3"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-2000:]
    code, out, _ = run("check", "--deps", "--data-dir", str(data), "--environment", str(venv), "--format", "json")
    assert code == 1
    [hit] = [f for f in json.loads(out) if f["severity"] == "error"]
    assert hit["id"] == "advisories.PYSEC-2019-115"
    assert hit["title"].startswith("python-gnupg 0.4.3 is affected by PYSEC-2019-115 (CVE-2019-6690")
    assert hit["detail"] == "upgrade python-gnupg to 0.4.4 or later"


def test_environment_that_is_not_one_is_refused(tmp_path: Path, data: Path) -> None:
    code, _, err = run("check", "--deps", "--data-dir", str(data), "--environment", str(tmp_path / "nothing"))
    assert code == 2
    assert "not a virtual environment" in err


def test_check_without_a_database_says_so_and_creates_none(tmp_path: Path) -> None:
    """The report changes nothing: no empty SQLite file appears, and a schema-less one is a finding."""
    scratch = tmp_path / "data"
    assert run("init", "--data-dir", str(scratch))[0] == 0
    (scratch / "bastion.db").unlink()
    for leftover in scratch.glob("bastion.db-*"):
        leftover.unlink()
    before = fingerprint(scratch)
    code, out, _ = run("check", "--data-dir", str(scratch), "--format", "json")
    assert code == 1
    [finding] = [f for f in json.loads(out) if f["id"] == "database"]
    assert finding["title"] == f"there is no database in {scratch}"
    assert fingerprint(scratch) == before
    (scratch / "bastion.db").write_bytes(b"")  # a database without the schema
    code, out, _ = run("check", "--data-dir", str(scratch), "--format", "json")
    assert code == 1
    [finding] = [f for f in json.loads(out) if f["id"] == "database"]
    assert "cannot be read" in finding["title"]
