"""The two ways a backup command fails, which the CLI turns into its exit codes.

The message of each is one line for the operator: which file, which part and
what is wrong with it, never key material or the content of a part.
"""

from __future__ import annotations

__all__ = ["BackupInvalid", "BackupUnavailable"]


class BackupInvalid(Exception):
    """A backup that is not what it claims: tampered, truncated, unsigned, or signed by an
    unknown key (exit 1). Nothing is restored from it."""


class BackupUnavailable(Exception):
    """The command cannot run: no recipients, a destination that cannot be reached, a
    missing identity or ``pg_dump`` (exit 2). Says nothing about any backup's integrity."""
