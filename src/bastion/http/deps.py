"""Dependencies shared by routes: who is calling, from where, in which unit of work."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from fastapi import Request

from bastion.audit import Origin
from bastion.work import UnitOfWork, unit_of_work


def origin_of(request: Request) -> Origin:
    return Origin(
        ip=request.client.host if request.client else None,
        request_id=request.state.request_id,
        user_agent=request.headers.get("user-agent", "")[:256],
    )


def work(request: Request) -> AbstractAsyncContextManager[UnitOfWork]:
    state = request.app.state
    return unit_of_work(state.sessionmaker, origin_of(request), state.postman.deliver)
