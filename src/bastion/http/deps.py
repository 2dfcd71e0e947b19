"""Dependencies shared by routes: who is calling, from where, in which unit of work."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from fastapi import Request

from bastion.audit import Origin
from bastion.uow import UnitOfWork, open_unit_of_work


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


def unit_of_work(request: Request) -> AbstractAsyncContextManager[UnitOfWork]:
    """The request's unit of work (``async with unit_of_work(request) as uow``)."""
    state = request.app.state
    return open_unit_of_work(state.sessionmaker, origin_of(request), state.postman.deliver)
