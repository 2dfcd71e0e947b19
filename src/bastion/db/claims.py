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

from sqlalchemy import ColumnElement, Row, Update, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


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
    statement = update(model).where(*expected).values(dict(values)).returning(*returning)
    # Rows loaded in the ORM session are not refreshed: the claim's winner is
    # told by RETURNING, and callers read nothing stale afterwards.
    return statement.execution_options(synchronize_session=False)


async def claim(
    db: AsyncSession | AsyncConnection, statement: Update, parameters: Mapping[str, Any] | None = None
) -> Row[Any] | None:
    """The row ``statement`` changed, or None: someone else claimed it first, or its condition never held."""
    result = await db.execute(statement, dict(parameters or {}))
    return result.first()
