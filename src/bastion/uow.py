"""The unit of work (``uow``): one transaction, where it came from, and the
mail it will send once it commits.

Routes open one with ``unit_of_work(request)`` (``bastion.unit_of_work`` for
extensions); the command line and tests with ``open_unit_of_work``. The
module is ``uow``, as every variable holding one is, so that it does not
shadow ``bastion.unit_of_work``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from fastapi import Request

from bastion.audit import Origin
from bastion.db import Database, Transaction
from bastion.http.problems import Problem
from bastion.mail import Mail


@dataclass
class UnitOfWork:
    db: Transaction
    origin: Origin
    outbox: list[Mail] = field(default_factory=list)


@asynccontextmanager
async def open_unit_of_work(
    database: Database,
    origin: Origin,
    deliver: Callable[[list[Mail]], Awaitable[None]],
) -> AsyncIterator[UnitOfWork]:
    """Commit on success, and also on a deliberate refusal (a Problem).

    A refusal still changes state on purpose: the failed-login counter, the
    lockout, the audit event of the attempt. Anything else rolls back. Mail
    is handed over only after the commit, so no mail promises a change that
    did not happen.
    """
    uow = UnitOfWork(database.begin(), origin)
    try:
        yield uow
    except Problem:
        await uow.db.close(commit=True)
        await deliver(uow.outbox)
        raise
    except BaseException:
        await uow.db.close(commit=False)
        raise
    await uow.db.close(commit=True)
    await deliver(uow.outbox)


def unit_of_work(request: Request) -> AbstractAsyncContextManager[UnitOfWork]:
    """The request's unit of work (``async with unit_of_work(request) as uow``)."""
    state = request.app.state
    return open_unit_of_work(state.db, origin_of(request), state.postman.deliver)


def origin_of(request: Request) -> Origin:
    """Where a request came from; on the admin listener, also the client
    certificate its handshake verified (``request.state.admin_identity``, set
    by ``bastion.network.listener`` from the TLS layer, never from the request)."""
    admin = getattr(request.state, "admin_identity", None)
    return Origin(
        ip=request.client.host if request.client else None,
        request_id=request.state.request_id,
        user_agent=request.headers.get("user-agent", "")[:256],
        client_cert_cn=getattr(admin, "subject_cn", None),
        client_cert_serial=getattr(admin, "serial", None),
    )
