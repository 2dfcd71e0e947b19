"""What every command shares: the data directory option and one-line failures
with exit code 2.

Nothing here imports the server (SQLAlchemy, FastAPI, the crypto core): the
command modules import it at the top, and ``bastion --help`` must stay fast.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Annotated, NoReturn, Protocol

import typer
from rich.console import Console
from rich.markup import escape

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
