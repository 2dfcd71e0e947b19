"""Factories, one module per domain: the accounts, credentials and records a
test needs, made directly through the services (no mail round trip, no
sign-in request), each in its own committed unit of work.

A factory goes through the same service a route calls, so what it makes is a
state the app can reach (an admin "with MFA" has TOTP enrolled and a
two-factor session), and the audit events the service writes are written.
The flows themselves (registration, sign-in, enrolment) are tested through
HTTP in their own tests; everywhere else they are setup, and setup should be
cheap and say what it makes.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from bastion.audit import Origin
from bastion.uow import UnitOfWork, open_unit_of_work

# What a factory's audit events name as their origin.
ORIGIN = Origin(ip=None, request_id="factory", user_agent="tests/factories")


def unit_of_work(app: FastAPI) -> AbstractAsyncContextManager[UnitOfWork]:
    """A unit of work on the running app's services (inside its lifespan)."""
    state = app.state
    return open_unit_of_work(state.db, ORIGIN, state.postman.deliver)
