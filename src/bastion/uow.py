"""The unit of work (``uow``): one transaction, where it came from, and the
mail it will send once it commits.

Routes open one with ``unit_of_work(request)`` (``bastion.http.deps``, and
``bastion.unit_of_work`` for extensions); the command line and tests with
``open_unit_of_work``. The module is ``uow``, as every variable holding one
is, so that it does not shadow ``bastion.unit_of_work``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bastion.audit import Origin
from bastion.http.problems import Problem
from bastion.mail import Mail


@dataclass
class UnitOfWork:
    db: AsyncSession
    origin: Origin
    outbox: list[Mail] = field(default_factory=list)


@asynccontextmanager
async def open_unit_of_work(
    sessions: async_sessionmaker[AsyncSession],
    origin: Origin,
    deliver: Callable[[list[Mail]], Awaitable[None]],
) -> AsyncIterator[UnitOfWork]:
    """Commit on success, and also on a deliberate refusal (a Problem).

    A refusal still changes state on purpose: the failed-login counter, the
    lockout, the audit event of the attempt. Anything else rolls back. Mail
    is handed over only after the commit, so no mail promises a change that
    did not happen.
    """
    async with sessions() as db:
        uow = UnitOfWork(db, origin)
        try:
            yield uow
        except Problem:
            await db.commit()
            await deliver(uow.outbox)
            raise
        except BaseException:
            await db.rollback()
            raise
        await db.commit()
        await deliver(uow.outbox)
