"""What every command shares: the data directory option, one-line failures
with exit code 2, and how times and durations are written on the command line.

Nothing here imports the server (SQLAlchemy, FastAPI, the crypto core): the
command modules import it at the top, and ``bastion --help`` must stay fast.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Protocol

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

if TYPE_CHECKING:
    from bastion.settings import Settings

DATA_DIR_ENV = "BASTION_DATA_DIR"


class _Parsed(Protocol):
    """A click context (typer's own copy of click has no public name for it)."""

    def get_parameter_source(self, name: str) -> Enum | None: ...


def _given(ctx: _Parsed) -> bool:
    source = ctx.get_parameter_source("data_dir")
    return source is not None and source.name == "COMMANDLINE"


def _data_dir(ctx: typer.Context, value: Path | None) -> Path | None:
    """A command's own ``--data-dir`` wins, then ``bastion --data-dir``, then the
    environment: so ``bastion --data-dir D user list`` means what it says."""
    root = ctx.find_root()
    if not _given(ctx) and root is not ctx and _given(root):
        return Path(root.params["data_dir"])
    return value


# Every command takes the data directory the same way, and so does `bastion` itself.
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_ENV,
        help="Data directory [default: ./bastion-data].",
        show_default=False,
        callback=_data_dir,
    ),
]

# No emoji codes: ":x" in a module path must print as written.
out = Console(soft_wrap=True, emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)


class CommandError(Exception):
    """A one-line reason for the command line to print."""


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr and a non-zero exit: the CLI's only way to fail."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


class _OneLineErrors:
    """Turns expected failures into one line and exit code 2; never swallows one."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            return
        # Imported here: only a command that has already loaded them can raise them.
        from bastion.http.problems import Problem
        from bastion.security import KeyringError
        from bastion.settings import ConfigError

        if isinstance(exc, (ConfigError, KeyringError, FileExistsError, CommandError)):
            fail(str(exc))
        if isinstance(exc, Problem):
            # The service refused, as it would over HTTP: its public detail is the reason.
            fail(exc.detail or exc.title)
        if isinstance(exc, OSError):
            fail(f"{exc.filename or 'the data directory'}: {exc.strerror or exc}")


def one_line_errors() -> _OneLineErrors:
    return _OneLineErrors()


def settings_for(data_dir: Path | None, **overrides: object) -> Settings:
    """The instance's settings (``--data-dir``, bastion.toml, the environment); a bad one is one line."""
    from bastion.settings import load_settings

    with one_line_errors():
        return load_settings(data_dir, **overrides)


def read_key_file(path: Path) -> list[str]:
    """The note verifier keys (vkeys) in a ``--key`` file (``bastion keys export-public``'s);
    CommandError when it cannot be read or holds none."""
    from bastion.audit.verify import read_vkeys

    try:
        vkeys = read_vkeys(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot be read ({exc})") from None
    if not vkeys:
        raise CommandError(f"{path}: holds no note verifier key (vkey)")
    return vkeys


def _is_usage_error(exc: BaseException) -> bool:
    """A click error (missing option, unknown command, bad value), but not "no arguments: show
    the help". By class name, as typer itself tells them apart: its copy of click is private."""
    names = {kind.__name__ for kind in type(exc).__mro__}
    return "ClickException" in names and "NoArgsIsHelpError" not in names


@contextmanager
def _usage_in_one_line() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if not _is_usage_error(exc):
            raise
        message = " ".join(str(getattr(exc, "format_message", exc.__str__)()).split())
        where: Any = getattr(exc, "ctx", None)
        if where is not None:
            message += f" (see: {where.command_path} --help)"
        fail(message)


class OneLineUsage(TyperGroup):
    """The root command, so that click's usage errors read like every other failure: one line,
    ``error: …``, exit code 2 (typer would draw a four-line box, exit 2 or 1).

    A subcommand's options are parsed inside its parent's ``invoke``, so the
    root's ``make_context`` and ``invoke`` see every usage error of the CLI.
    """

    # Any: the Context of typer's private copy of click, which has no public name.
    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        with _usage_in_one_line():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with _usage_in_one_line():
            return super().invoke(ctx)


# On the command line a duration always carries its unit: "2026" could be a
# year or seconds, and guessing either is how a forensic export misses the
# incident. bastion.toml keeps accepting bare seconds (settings.parse_duration).
_CLI_DURATION = re.compile(r"[0-9]+(?:\.[0-9]+)?[smhd]")
# RFC 3339 §5.6 date-time (the "T" may be "t" or a space, §5.6 NOTE); the
# offset is optional here only so that its absence gets a message of its own.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
_DURATION_HINT = "30s, 15m, 2h or 7d"


def parse_cli_duration(text: str) -> float:
    """Seconds in a command-line duration: ``30s``, ``15m``, ``2h``, ``7d``; the unit is required.

    CommandError (one line, naming at most 64 characters of the input) for
    anything else, a bare number included, and for a duration that is not
    positive or is ten years or more (``settings.parse_duration``'s bounds).
    """
    from bastion.settings import parse_duration

    value = text.strip()
    if not _CLI_DURATION.fullmatch(value):
        raise CommandError(f"{text[:64]!r} is not a duration: write {_DURATION_HINT} (the unit is required)")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def parse_when(text: str, now: dt.datetime) -> dt.datetime:
    """A command-line time: an RFC 3339 date-time with its offset (``2026-03-01T12:00:00Z``),
    or a duration ago (``24h``: ``now`` minus 24 hours); an aware UTC datetime.

    Every command that takes ``--since`` or ``--until`` reads it here, so
    the same text means the same instant everywhere. A bare number
    (``2026``), a date without a time, or a time without an offset is a
    CommandError, never a guess.
    """
    value = text.strip()
    if _CLI_DURATION.fullmatch(value):
        return now - dt.timedelta(seconds=parse_cli_duration(value))
    shape = _RFC3339.fullmatch(value)
    if shape is None:
        raise CommandError(f"{text[:64]!r} is neither an RFC 3339 time nor a duration ago like 24h")
    if shape["offset"] is None:
        raise CommandError(f"{text[:64]!r} has no UTC offset (RFC 3339 needs Z or +hh:mm)")
    try:
        when = dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:  # the right shape, but no such date or time (2026-02-30, 24:00:00)
        raise CommandError(f"{text[:64]!r} is not a valid RFC 3339 time") from None
    return when.astimezone(dt.UTC)
