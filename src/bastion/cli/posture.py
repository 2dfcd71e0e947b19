"""``bastion check`` (the posture report, ``--deps``, ``--asvs``), ``bastion advisories import``
and ``bastion sbom``.

``check`` exits 1 on any error finding (``--asvs``: on a requirement not met
is no error; it is a statement of coverage) and 2 when it cannot run.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bastion.cli.common import CommandError, DataDir, fail, one_line_errors, out, settings_for

if TYPE_CHECKING:
    from bastion.posture import Finding

advisories = typer.Typer(help="The dependency advisory database (OSV) that `bastion check --deps` reads.")


class Format(StrEnum):
    text = "text"
    json = "json"
    sarif = "sarif"


def _site(environment: Path | None) -> list[str] | None:
    if environment is None:
        return None
    from bastion.posture.advisories import AdvisoryFileError, site_paths

    try:
        return site_paths(environment)
    except AdvisoryFileError as exc:
        fail(str(exc))


def check(
    data_dir: DataDir = None,
    output: Annotated[Format, typer.Option("--format", help="text, json (one document) or sarif.")] = Format.text,
    deps: Annotated[
        bool, typer.Option("--deps", help="Only the dependency advisories of the installed distributions.")
    ] = False,
    asvs: Annotated[
        bool, typer.Option("--asvs", help="Per OWASP ASVS 5.0 requirement: met by code, by configuration, ...")
    ] = False,
    environment: Annotated[
        Path | None,
        typer.Option(
            "--environment",
            help="Check the distributions of this virtual environment (or site-packages) instead of Bastion's own.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """The security posture: configuration, TLS, key ages, permissions, backups, audit, alerts, advisories."""
    if asvs:
        _asvs(output)
        return
    settings = settings_for(data_dir)
    site = _site(environment)
    now = dt.datetime.now(dt.UTC)
    if deps:
        from bastion.posture.report import advisory_findings

        findings = advisory_findings(settings, now, site=site)
    else:
        import asyncio

        from bastion.posture.report import posture_report

        findings = asyncio.run(posture_report(settings, now=now, site=site))
    _print(findings, output, settings.data_dir)
    if any(f.severity == "error" for f in findings):
        raise typer.Exit(1)


def _print(findings: list[Finding], output: Format, data_dir: Path) -> None:
    from bastion import __version__
    from bastion.posture.formats import as_json, as_sarif

    if output is Format.json:
        sys.stdout.write(json.dumps(as_json(findings), indent=2) + "\n")
        return
    if output is Format.sarif:
        sys.stdout.write(json.dumps(as_sarif(findings, version=__version__, data_dir=data_dir), indent=2) + "\n")
        return
    from rich.table import Table

    table = Table("severity", "setting", "finding", "fix", title="Bastion posture")
    colours = {"error": "red", "warning": "yellow", "info": "cyan"}
    for finding in findings:
        colour = colours[finding.severity]
        table.add_row(f"[{colour}]{finding.severity}[/]", finding.setting, finding.message, finding.fix)
    out.print(table)
    errors = sum(f.severity == "error" for f in findings)
    warnings = sum(f.severity == "warning" for f in findings)
    out.print(f"{errors} error(s), {warnings} warning(s)", highlight=False)


def _asvs(output: Format) -> None:
    from bastion.posture.asvs import CLASSES, AsvsDataError, classify

    try:
        rows = classify()
    except AsvsDataError as exc:
        fail(str(exc))
    counts = {name: sum(row.status == name for row in rows) for name in CLASSES}
    if output is Format.json:
        document = {"requirements": [row.as_json() for row in rows], "counts": counts, "total": len(rows)}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    if output is Format.sarif:
        fail("--asvs prints text or json")
    # Tab-separated (id, class, tests or reason): for cut and grep; rich would expand the tabs.
    sys.stdout.write("".join(f"{row.req_id}\t{row.status}\t{row.evidence}\n" for row in rows))
    sys.stdout.write(
        f"met by code: {counts['code']}, by configuration: {counts['configuration']}, "
        f"left to the operator: {counts['operator']}, not met: {counts['not met']} "
        f"(of {len(rows)} requirements)\n"
    )


@advisories.command("import")
def import_advisories(
    file: Annotated[Path, typer.Argument(help="OSV JSON: one advisory, an array, or a zip of them (osv.dev).")],
    data_dir: DataDir = None,
) -> None:
    """Merge OSV advisories (PyPI) into the data directory's database, by advisory id."""
    from bastion.posture.advisories import AdvisoryFileError, import_file

    settings = settings_for(data_dir)
    with one_line_errors():
        try:
            read, kept = import_file(settings.data_dir, file)
        except AdvisoryFileError as exc:
            raise CommandError(str(exc)) from None
    out.print(f"imported {read} advisories; {kept} kept in {settings.data_dir}", highlight=False)


def sbom(
    output: Annotated[
        Path | None, typer.Option("--out", help="Write the SBOM here instead of standard output.", show_default=False)
    ] = None,
    environment: Annotated[
        Path | None,
        typer.Option("--environment", help="Describe this virtual environment instead.", show_default=False),
    ] = None,
) -> None:
    """A CycloneDX 1.6 JSON SBOM of every distribution installed in Bastion's environment."""
    import warnings

    from bastion.posture.sbom import sbom_json

    site = _site(environment)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library's notes about the graph are not the user's business
        text = sbom_json(site=site)
    if output is None:
        sys.stdout.write(text + "\n")
        return
    partial = output.with_name(f".{output.name}.partial")
    try:
        partial.write_text(text + "\n", encoding="utf-8")
        partial.replace(output)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        fail(f"{output}: cannot be written ({exc.strerror or exc})")
    out.print(f"wrote {output}", highlight=False)


def register(app: typer.Typer) -> None:
    """``check``, ``sbom`` and ``advisories`` on the root command."""
    app.command("check")(check)
    app.command("sbom")(sbom)
    app.add_typer(advisories, name="advisories")
