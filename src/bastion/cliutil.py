"""What every command shares: one-line failures with exit code 2."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from bastion.security import KeyringError
from bastion.settings import ConfigError

# No emoji codes: ":x" in a module path must print as written.
out = Console(soft_wrap=True, emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)


class CommandError(Exception):
    """A one-line reason for the command line to print."""


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr and a non-zero exit: the CLI's only way to fail."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def one_line_errors() -> Iterator[None]:
    try:
        yield
    except (ConfigError, KeyringError, FileExistsError, CommandError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.filename or 'the data directory'}: {exc.strerror or exc}")
