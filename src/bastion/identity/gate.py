"""Sign-in attempts at an account whose budget is spent, refused before routing.

In a password-guessing flood nearly every attempt is refused by the
per-account throttle, and FastAPI's request handling was the larger part of
what each refusal cost (bench/cpu.py). This middleware answers those
attempts first, with the login route's own per-account throttle
(``identity.throttle.LOGIN_BY_ACCOUNT``, peeked, not counted: the route
counts) at the login route's own path, so the same 429 (or the same 503
when the counters are down) the route would give, only without the route.
Anything it is unsure of (no body, not an object, no address) goes on to the
route, which decides as before.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.http.throttle import Throttle
from bastion.identity.throttle import account_key, sign_in_address


class SignInGate:
    def __init__(self, app: ASGIApp, *, path: str, throttle: Throttle) -> None:
        self.app = app
        self.path = path
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        # The spine has already read, bounded and JSON-checked the whole body: one message.
        first = await receive()
        address = _address_in(first.get("body", b"")) if first["type"] == "http.request" else None
        if address is not None:
            await self.throttle.peek(scope["app"].state, account_key(address))
        await self.app(scope, _again(first, receive), send)


def _address_in(body: bytes) -> str | None:
    try:
        value: Any = json.loads(body) if body else None
    except ValueError:
        return None
    email = value.get("email") if isinstance(value, dict) else None
    return sign_in_address(email) if isinstance(email, str) and 0 < len(email) <= 254 else None


def _again(first: Message, receive: Receive) -> Receive:
    """``receive`` that hands out ``first`` once more before carrying on."""
    pending: list[Message] = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
