"""The ``bastion`` command: thin typer commands that call services.

Only typer, rich and the command modules load before a command runs; each
command imports the services it calls, so ``bastion --help`` stays fast
(tests/functional/test_cli.py checks which modules it loads).
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bastion import __version__
from bastion.cli import backup_ops
from bastion.cli import data as data_commands
from bastion.cli import delivery as delivery_commands
from bastion.cli import erasure as erasure_commands
from bastion.cli.audit import audit as audit_commands
from bastion.cli.backup import backup as backup_commands
from bastion.cli.block import block as block_commands
from bastion.cli.common import DataDir, OneLineUsage, fail, one_line_errors, out, settings_for
from bastion.cli.identity import sessions, users
from bastion.cli.incident import incident as incident_commands
from bastion.cli.mail import mail as mail_commands
from bastion.cli.monitor import alerts as alerts_commands
from bastion.cli.network import ca as ca_commands
from bastion.cli.network import firewall as firewall_commands
from bastion.cli.oauth import oauth as oauth_commands
from bastion.cli.posture import register as register_posture
from bastion.cli.privacy import privacy as privacy_commands
from bastion.cli.privacy import register as register_privacy

if TYPE_CHECKING:
    from bastion.settings import Settings

app = typer.Typer(
    name="bastion",
    cls=OneLineUsage,  # usage errors in one line, as every other failure
    help="Bastion: a self-hosted, secure-by-default backend server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


app.add_typer(users, name="user")
register_privacy(users)  # user export (bastion.cli.privacy)
erasure_commands.register(users)  # user erase (bastion.cli.erasure)
app.add_typer(sessions, name="sessions")
app.add_typer(ca_commands, name="ca")
app.add_typer(firewall_commands, name="firewall")
app.add_typer(data_commands.collections, name="collections")
app.add_typer(data_commands.keys, name="keys")
app.add_typer(mail_commands, name="mail")
app.add_typer(oauth_commands, name="oauth")
app.add_typer(alerts_commands, name="alerts")
delivery_commands.register(alerts_commands)  # alerts deliveries | redeliver (bastion.cli.delivery)
app.add_typer(block_commands, name="block")
app.add_typer(audit_commands, name="audit")
app.add_typer(incident_commands, name="incident")
register_posture(app)  # check, sbom, advisories (bastion.cli.posture)
app.add_typer(backup_commands, name="backup")
app.add_typer(privacy_commands, name="privacy")
backup_ops.register(backup_commands)  # backup restore | drill | prune (bastion.cli.backup_ops)


def _print_version(value: bool) -> None:
    if value:
        out.print(f"bastion {__version__}", highlight=False)
        raise typer.Exit


@app.callback()
def main_callback(
    data_dir: DataDir = None,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_print_version),
    ] = False,
) -> None:
    """--data-dir given here applies to the command that follows (its own --data-dir wins)."""
    from bastion.logging import configure_logging

    # Commands log warnings and errors only, to stderr, redacted; `serve`
    # switches to the configured level and format.
    configure_logging("warning", stream="stderr")


@app.command()
def init(data_dir: DataDir = None) -> None:
    """Create the data directory, keys, dev TLS certificate and schema. Safe to re-run."""
    from bastion import instance
    from bastion.settings import load_settings

    with one_line_errors():
        settings = load_settings(data_dir)
        for line in instance.initialise(settings):
            out.print(line, highlight=False)
    out.print(f"[green]ready:[/] {settings.data_dir}", highlight=False)


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Bring the database schema up to date."""
    from bastion import instance
    from bastion.settings import load_settings

    with one_line_errors():
        changes = instance.migrate(load_settings(data_dir))
    data_commands.show(changes, applied=True)
    out.print("[green]schema is up to date[/]")


@app.command()
def serve(  # noqa: PLR0917 - typer maps each parameter to an option
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    http: Annotated[
        bool, typer.Option("--http", help="Serve plain HTTP (dev, or behind a trusted TLS proxy).")
    ] = False,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    admin_port: Annotated[int | None, typer.Option(help="Port of the admin listener.")] = None,
    app_target: Annotated[
        str | None, typer.Option("--app", help="Serve your app: module:factory returning bastion.create_app(...).")
    ] = None,
) -> None:
    """Run the server: public HTTPS on 127.0.0.1:8443, admin (mTLS) on 127.0.0.1:8444."""
    # No cyclic collection while the application loads (~10 % of the import's
    # CPU, which is most of the start-up): imports make few cycles. The public
    # listener, forked from here, collects once and turns it back on when its
    # app is built (bastion.asgi); this process is replaced by the supervisor.
    gc.disable()
    try:
        _serve(data_dir, host, port, http, workers, admin_port, app_target)
    finally:
        gc.enable()  # reached only when serve refused to start: the listeners never return here


def _serve(  # noqa: PLR0917 - the command's options, passed on
    data_dir: Path | None,
    host: str | None,
    port: int | None,
    http: bool,
    workers: int | None,
    admin_port: int | None,
    app_target: str | None,
) -> None:
    from bastion.asgi import APP_ENV
    from bastion.logging import configure_server_logging, get_logger
    from bastion.posture import check_settings
    from bastion.secrets import open_keyrings

    # Workers are separate processes that load settings from the environment,
    # so command-line overrides travel there too.
    overrides = {
        "BASTION_SERVER__HOST": host,
        "BASTION_SERVER__PORT": port,
        "BASTION_SERVER__WORKERS": workers,
        "BASTION_SERVER__TLS": "false" if http else None,
        "BASTION_ADMIN__PORT": admin_port,
        APP_ENV: app_target,
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
    from bastion.network.serve import launch
    from bastion.network.serve import prepare as prepare_listeners

    if app_target:
        _check_app_target(app_target)
    # From here on everything the server says is a log line, in one format
    # (log.format) and through one redaction, whichever process says it.
    configure_server_logging(settings)
    log = get_logger("bastion.serve")
    for finding in findings:
        if finding.severity == "warning":
            log.warning(finding.message, setting=finding.setting, fix=finding.fix)
        elif finding.severity == "info":
            log.info(finding.message)
    with one_line_errors():
        open_keyrings(settings)
    _migrate_in_a_child(settings)
    with one_line_errors():
        listeners = prepare_listeners(settings)

    for listener in listeners:
        log.info("listening", listener=listener.name, url=listener.url, version=__version__)
    # Forks the public listener from this process, which has the application
    # loaded, then becomes a supervisor that holds none of it (exec).
    launch(settings, listeners)


def _migrate_in_a_child(settings: Settings) -> None:
    """``instance.migrate`` in a child process; this one exits as it did if it failed.

    The public listener is forked from this process (``launch``), and
    whatever is imported here it holds for its whole life: Alembic (~10 MiB)
    is needed only for the migration, so only the child loads it. The child
    also opens and closes every database connection, so none is open here
    when the listener is forked.
    """
    child = os.fork()
    if child == 0:
        code = 1
        try:
            from bastion import instance

            with one_line_errors():
                instance.migrate(settings)
            code = 0
        except typer.Exit as exc:
            code = exc.exit_code
        except BaseException:  # noqa: BLE001 - printed, as Python would; this child must never return into the command
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise typer.Exit(code if code > 0 else 1)


def _check_app_target(target: str) -> None:
    """Fail here, in one line, rather than in every worker: an app that
    cannot be built, or that has a route without a declared guard."""
    from bastion.access import UnguardedRoutes, check_routes
    from bastion.asgi import load_target

    try:
        check_routes(load_target(target)())
    except (ImportError, AttributeError, TypeError, UnguardedRoutes) as exc:
        fail(f"--app {target}: {exc}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
