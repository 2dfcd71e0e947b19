"""Spending single-use and counted credentials: one compare-and-set statement each.

A credential that may be used once (a reset or verification link, an MFA
step, a recovery code, a refresh token, a TOTP time step) or only so many
times (the wrong codes one MFA step allows) is never spent by reading its
row and writing it back: two requests racing each other would both read
"unused", and both would win. The condition goes into the UPDATE's WHERE
clause instead, and RETURNING hands the row to the one request that
changed it; every other request gets None and refuses.

That one statement is atomic on both databases. PostgreSQL (READ
COMMITTED) makes a second UPDATE of the same row wait until the first
transaction ends, then evaluates its WHERE again on the row as that
transaction left it. SQLite has one writer at a time, and the UPDATE that
begins a write transaction reads the row inside it.

A read before the claim is only a hint (is there such a row, for whom?):
whatever it saw, the claim decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Update, update

from bastion.db.database import Transaction


def compare_and_set(
    model: Any,
    *expected: ColumnElement[bool],
    values: Mapping[Any, Any],
    returning: Sequence[Any],
) -> Update:
    """``UPDATE model SET values WHERE expected RETURNING returning``, to run with :func:`claim`.

    ``expected`` must hold everything that makes the credential usable (unused,
    unexpired, under its cap): a condition checked anywhere else is a race.
    """
    return update(model).where(*expected).values(dict(values)).returning(*returning)


async def claim(tx: Transaction, statement: Update, parameters: Mapping[str, Any] | None = None) -> Any | None:
    """The row ``statement`` changed, or None: someone else claimed it first, or its condition never held."""
    return await tx.changed(statement, parameters)
