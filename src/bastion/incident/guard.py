"""The write path during lockdown, as one pure-ASGI middleware (``LockdownGuard``).

While lockdown is on, on the public listener:

- a request that may change state (any method but GET, HEAD, OPTIONS) is
  refused with ``LockdownActive`` (503, ``type`` ending ``/lockdown``) before
  routing, so no route, extension or record write runs;
- reads go on (``incident.lockdown_allows_reads``; when false they are
  refused too, except the health probes);
- the sign-in and sign-out endpoints (:data:`SIGN_IN_PATHS`) pass: the
  session, refresh and grant issuers refuse everyone there but admins with
  a second factor (``Lockdown.admit_sign_in``), and ending a session or
  revoking a token only ever takes access away;
- ``/healthz`` and ``/readyz`` always answer, so load balancers keep
  sending the reads.

The admin listener is never affected: the admin plane is how the operator
ends the lockdown. Off, the guard costs one cached read per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.http.problems import LockdownActive
from bastion.incident.state import Lockdown

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROBES = frozenset({"/healthz", "/readyz"})
# Sign-in and sign-out: checked where sessions and grants are issued, not here.
# tests/functional/incident/test_lockdown.py checks that every one is a route.
SIGN_IN_PATHS = frozenset(
    {
        "/api/v1/auth/login",
        "/api/v1/auth/mfa",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/auth/providers/exchange",
        "/oauth2/token",
        "/oauth2/revoke",
        "/oauth2/introspect",
        "/oauth2/par",
        "/oauth2/device",
        "/oauth2/sign-in",
        "/oauth2/sign-in/mfa",
        "/oauth2/consent",
        "/oauth2/logout/confirm",
        "/oauth2/device/verify",
        "/oauth2/device/decision",
    }
)


PasswordStep = Callable[[Any, bytes], Awaitable[bool]]


class LockdownGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        on_admin_plane: Callable[[Scope], bool],
        password_paths: frozenset[str] = frozenset(),
        may_take_password_step: PasswordStep | None = None,
    ) -> None:
        """``on_admin_plane``: whether a request came through the admin listener (bastion.network's answer).

        ``password_paths`` (the sign-in API's and the hosted sign-in page's) and
        ``may_take_password_step`` (bastion.identity.lockdown): during lockdown, a password
        sign-in whose body does not name an admin with a second factor is refused before its
        password is checked, and that admin's failed attempts (401) are answered with the
        lockdown problem too, so the answer never tells a right password from a wrong one.
        ``may_take_password_step`` must spend a password check's time before it answers False
        (bastion.identity.lockdown runs the dummy verify): otherwise the refusal would come
        sooner than an admin's answer, and its timing would name the admins.
        """
        self.app = app
        self.on_admin_plane = on_admin_plane
        self.password_paths = password_paths
        self.may_take_password_step = may_take_password_step

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lockdown: Lockdown | None = getattr(scope["app"].state, "lockdown", None)
        if lockdown is None:
            await self.app(scope, receive, send)
            return
        if self._guarded(scope, lockdown) and await lockdown.is_on():
            raise LockdownActive
        if self.may_take_password_step is not None and self._password_step(scope) and await lockdown.is_on():
            await self._password_step_in_lockdown(self.may_take_password_step, scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _password_step(self, scope: Scope) -> bool:
        return scope["method"] == "POST" and scope["path"] in self.password_paths and not self.on_admin_plane(scope)

    async def _password_step_in_lockdown(
        self, may_take_password_step: PasswordStep, scope: Scope, receive: Receive, send: Send
    ) -> None:
        # The spine has already read, bounded and JSON-checked the whole body: one message.
        first = await receive()
        body = first.get("body", b"") if first["type"] == "http.request" else b""
        if not await may_take_password_step(scope["app"].state, body):
            raise LockdownActive
        refused = False

        async def masked(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 401:
                refused = True
            if not refused:
                await send(message)

        await self.app(scope, _again(first, receive), masked)
        if refused:
            raise LockdownActive

    def _guarded(self, scope: Scope, lockdown: Lockdown) -> bool:
        """Whether lockdown would refuse this request (cheap checks first, no I/O)."""
        path: str = scope["path"]
        if path in PROBES or path in SIGN_IN_PATHS or self.on_admin_plane(scope):
            return False
        return scope["method"] not in SAFE_METHODS or not lockdown.allows_reads


def _again(first: Message, receive: Receive) -> Receive:
    """``receive`` that hands out ``first`` once more before carrying on."""
    pending: list[Message] = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
