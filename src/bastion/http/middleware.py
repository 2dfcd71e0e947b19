"""The request spine every route runs inside, as one pure-ASGI middleware.

In order: a request id, the real client address, security headers on every
response, the body size limit, JSON-only bodies with a nesting limit, and a
last-resort handler that turns any crash into a generic 500 problem while the
log gets the traceback. One middleware rather than six keeps the per-request
cost to a single extra coroutine frame.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.http.problems import (
    BadRequest,
    InternalError,
    PayloadTooLarge,
    Problem,
    UnsupportedMediaType,
    render,
)
from bastion.http.proxies import TrustedProxies

log = structlog.get_logger("bastion.http")

# Accept a caller's id only if it is short and cannot smuggle anything into
# logs or headers; otherwise mint our own.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")
_JSON_TYPE = re.compile(r"application/(?:[a-z0-9.+-]+\+)?json(?:\s*;\s*charset=\"?utf-8\"?)?", re.I)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

API_CSP = b"default-src 'none'; frame-ancestors 'none'"
# HTML (the hosted pages, bastion.pages): scripts, styles and requests to this
# origin only, never inline code, forms posting nowhere else, no framing, and
# DOM sinks that take strings (innerHTML) refused outright.
PAGE_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'; require-trusted-types-for 'script'"
)
API_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
    (b"cache-control", b"no-store"),
)


class SpineMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_json_depth: int,
        trusted_proxies: TrustedProxies,
        hsts: str | None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.proxies = trusted_proxies
        self.hsts = hsts.encode() if hsts else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers = _headers(scope["headers"])
        request_id = _request_id(headers.get("x-request-id"))
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        self._attribute_client(scope, headers)

        extra = [*API_HEADERS, (b"x-request-id", request_id.encode())]
        if self.hsts and scope.get("scheme") == "https":
            extra.append((b"strict-transport-security", self.hsts))
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = _merge_headers(message.get("headers", []), extra)
            await send(message)

        try:
            if scope["method"] in _BODY_METHODS:
                receive = await self._checked_body(headers, receive)
            await self.app(scope, receive, send_with_headers)
        except Problem as problem:
            await _send_problem(send_with_headers, problem, request_id)
        except Exception:
            log.exception("unhandled error", path=scope.get("path"), method=scope.get("method"))
            if not started:
                await _send_problem(send_with_headers, InternalError(), request_id)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")

    def _attribute_client(self, scope: Scope, headers: dict[str, str]) -> None:
        client = scope.get("client")
        if self.proxies and client:
            ip = self.proxies.client_ip(client[0], headers.get("x-forwarded-for"))
            scope["client"] = (ip, client[1] if ip == client[0] else 0)
            if ip != client[0] and headers.get("x-forwarded-proto") in ("http", "https"):
                scope["scheme"] = headers["x-forwarded-proto"]

    async def _checked_body(self, headers: dict[str, str], receive: Receive) -> Receive:
        """Read the whole body within the limit and check it is sane JSON.

        Raises a Problem before the application sees a byte of a bad body.
        """
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BadRequest("The Content-Length header is malformed.")
            if int(declared) > self.max_body_bytes:
                raise PayloadTooLarge
        if declared == "0" or (declared is None and "transfer-encoding" not in headers):
            return receive

        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _replay(b"", disconnected=True)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body:
            if not _JSON_TYPE.fullmatch(headers.get("content-type", "").strip()):
                raise UnsupportedMediaType
            self._check_json(body)
        return _replay(body)

    def _check_json(self, body: bytes) -> None:
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            raise BadRequest from None
        # Counting brackets is a cheap upper bound on depth; walk only when it
        # could exceed the limit.
        if body.count(b"[") + body.count(b"{") > self.max_json_depth and _depth(value) > self.max_json_depth:
            raise BadRequest(f"JSON nesting deeper than {self.max_json_depth} levels is not accepted.")


def _depth(value: Any) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def _replay(body: bytes, *, disconnected: bool = False) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent or disconnected:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in raw}


def _request_id(offered: str | None) -> str:
    if offered and _REQUEST_ID.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


def _merge_headers(
    headers: Iterable[tuple[bytes, bytes]], extra: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    # Our security headers win over anything a handler set, and no response
    # names the server software.
    names = {name for name, _ in extra} | {b"content-security-policy"}
    kept = [(n, v) for n, v in headers if n.lower() not in names and n.lower() != b"server"]
    html = any(n.lower() == b"content-type" and v.lower().startswith(b"text/html") for n, v in kept)
    return [*kept, *extra, (b"content-security-policy", PAGE_CSP if html else API_CSP)]


async def _send_problem(send: Send, problem: Problem, request_id: str) -> None:
    body, headers = render(problem, request_id)
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": problem.status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
