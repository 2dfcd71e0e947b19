"""The ``bastion`` command: thin typer commands that call services."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from bastion import __version__, instance
from bastion.logging import configure_logging
from bastion.posture.checks import Finding, check_settings
from bastion.secrets import open_keyrings
from bastion.security import KeyringError
from bastion.settings import ConfigError, Settings, load_settings

app = typer.Typer(
    name="bastion",
    help="Bastion: a self-hosted, secure-by-default backend server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="BASTION_DATA_DIR",
        help="Data directory [default: ./bastion-data].",
        show_default=False,
    ),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr and a non-zero exit: the CLI's only way to fail."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def one_line_errors() -> Iterator[None]:
    try:
        yield
    except (ConfigError, KeyringError, FileExistsError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.filename or 'the data directory'}: {exc.strerror or exc}")


def settings_for(data_dir: Path | None, **overrides: object) -> Settings:
    with one_line_errors():
        return load_settings(data_dir, **overrides)


@app.callback()
def main_callback(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(__version__)
        raise typer.Exit


@app.command()
def init(data_dir: DataDir = None) -> None:
    """Create the data directory, keys, dev TLS certificate and schema. Safe to re-run."""
    with one_line_errors():
        settings = load_settings(data_dir)
        for line in instance.initialise(settings):
            out.print(line, highlight=False)
    out.print(f"[green]ready:[/] {settings.data_dir}", highlight=False)


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Bring the database schema up to date."""
    with one_line_errors():
        instance.migrate(load_settings(data_dir))
    out.print("[green]schema is up to date[/]")


@app.command()
def check(data_dir: DataDir = None) -> None:
    """Print the security posture findings without starting the server."""
    findings = check_settings(settings_for(data_dir))
    table = Table("severity", "setting", "finding", "fix", title="Bastion posture")
    colours = {"error": "red", "warning": "yellow", "info": "cyan"}
    for finding in findings:
        colour = colours[finding.severity]
        table.add_row(f"[{colour}]{finding.severity}[/]", finding.setting, finding.message, finding.fix)
    out.print(table)
    if any(f.severity == "error" for f in findings):
        raise typer.Exit(1)


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    http: Annotated[
        bool, typer.Option("--http", help="Serve plain HTTP (dev, or behind a trusted TLS proxy).")
    ] = False,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
) -> None:
    """Run the server (HTTPS on 127.0.0.1:8443 by default)."""
    # Workers are separate processes that load settings from the environment,
    # so command-line overrides travel there too.
    overrides = {
        "BASTION_SERVER__HOST": host,
        "BASTION_SERVER__PORT": port,
        "BASTION_SERVER__WORKERS": workers,
        "BASTION_SERVER__TLS": "false" if http else None,
    }
    for name, value in overrides.items():
        if value is not None:
            os.environ[name] = str(value)
    settings = settings_for(data_dir)
    os.environ["BASTION_DATA_DIR"] = str(settings.data_dir.resolve())

    findings = check_settings(settings)
    refused = [f for f in findings if f.severity == "error"]
    if refused:
        fail(f"refusing to start: {refused[0].line()}")
    _banner(findings)
    with one_line_errors():
        open_keyrings(settings)
        instance.migrate(settings)
        tls = _tls_files(settings) if settings.server.tls else None

    from granian import Granian
    from granian.constants import HTTPModes, Interfaces

    configure_logging(settings.log.level)
    scheme = "https" if tls else "http"
    err.print(f"Bastion {__version__} listening on {scheme}://{settings.server.host}:{settings.server.port}")
    Granian(
        "bastion.app:app_factory",
        factory=True,
        interface=Interfaces.ASGI,
        address=settings.server.host,
        port=settings.server.port,
        workers=settings.server.workers,
        http=HTTPModes.http1 if not tls else HTTPModes.auto,
        websockets=False,
        ssl_cert=tls[0] if tls else None,
        ssl_key=tls[1] if tls else None,
        ssl_protocol_min="tls1.2",  # type: ignore[arg-type]
        log_access=False,
        log_dictconfig=GRANIAN_LOGGING,
    ).serve()


# Granian's own loggers hand their records to the root logger, which
# configure_logging has set up: one JSON format, one redaction, for every line.
GRANIAN_LOGGING = {
    "formatters": {},
    "handlers": {},
    "loggers": {
        name: {"handlers": [], "propagate": True, "level": "INFO"} for name in ("_granian", "granian.access")
    },
}


def _tls_files(settings: Settings) -> tuple[Path, Path]:
    cert, key = settings.cert_file, settings.key_file
    for path in (cert, key):
        if not path.is_file():
            raise ConfigError(f"TLS file {path} is missing; run `bastion init` or set server.cert_file/key_file")
    return cert, key


def _banner(findings: list[Finding]) -> None:
    for finding in findings:
        if finding.severity == "warning":
            err.print(f"[yellow]warning:[/] {finding.line()}", highlight=False)
        elif finding.severity == "info":
            err.print(f"[cyan]{finding.message}[/]", highlight=False)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
