"""What every command shares: one-line failures with exit code 2."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from bastion.security import KeyringError
from bastion.settings import ConfigError

# Every command takes the data directory the same way.
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="BASTION_DATA_DIR",
        help="Data directory [default: ./bastion-data].",
        show_default=False,
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
        if isinstance(exc, (ConfigError, KeyringError, FileExistsError, CommandError)):
            fail(str(exc))
        if isinstance(exc, OSError):
            fail(f"{exc.filename or 'the data directory'}: {exc.strerror or exc}")


def one_line_errors() -> _OneLineErrors:
    return _OneLineErrors()
