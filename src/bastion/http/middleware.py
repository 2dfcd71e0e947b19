"""The request spine every route runs inside, as one pure-ASGI middleware.

In order: a request id, the real client address, one Host (HTTP/1.1), security
headers on every response, HEAD answered as GET without the body, the body
size limit and deadline, JSON-only bodies with a nesting limit, a
last-resort handler that turns any crash into a generic 500 problem while the
log gets the traceback, and one access-log line. One middleware rather than
several keeps the per-request cost to a single extra coroutine frame.

It behaves the same over HTTP/1.1 and HTTP/2. Two differences it absorbs:
an HTTP/2 body need not declare its length (no Content-Length, no
Transfer-Encoding), so every body is read and counted; and an answer sent
before the body has been read makes the server reset the HTTP/2 stream,
which many clients (curl, httpx) report as a stream error instead of the
answer, so a body that is too large is read to its end and discarded
(up to ``_DRAIN_FACTOR`` times the limit, within the body deadline) before
the 413 goes out.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.http.problems import (
    BadRequest,
    InternalError,
    PayloadTooLarge,
    Problem,
    RequestTimeout,
    UnsupportedMediaType,
    render,
)
from bastion.http.proxies import TrustedProxies
from bastion.settings import Settings

log = structlog.get_logger("bastion.http")
access_log = structlog.get_logger("bastion.access")
# Called once per answer with its scope (``scope["route"]`` is the matched
# route, when one matched), status and duration; must not block or raise.
ResponseObserver = Callable[[Scope, int, float], None]

# A caller's own X-Request-ID is logged beside ours (client_request_id) only if
# it is short and cannot smuggle anything into logs; it never becomes ours.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")
_JSON_TYPE = re.compile(r"application/(?:[a-z0-9.+-]+\+)?json(?:\s*;\s*charset=\"?utf-8\"?)?", re.I)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The OAuth endpoints and the hosted pages' forms take form bodies (RFC 6749
# §3.2, HTML forms); everything else takes JSON only.
_FORM_TYPE = re.compile(r"application/x-www-form-urlencoded(?:\s*;\s*charset=\"?utf-8\"?)?", re.I)
_FORM_PATHS = ("/oauth2/",)
# An origin a hosted page may post its form to beside its own (``allow_form_action``):
# a scheme and host, no path, nothing that could end a CSP directive.
_FORM_ORIGIN = re.compile(r"(?:https?://[A-Za-z0-9.\-\[\]:]{1,300}|[a-z][a-z0-9+.\-]{0,63}:)")
FORM_ACTION_KEY = "bastion.form_action"

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
# Replaces granian's `server: granian`: no server software or version (V13.4.6).
SERVER_HEADER = (b"server", b"bastion")
# A body over the limit is read and discarded up to this many times the limit
# (so HTTP/2 clients get the 413 rather than a reset stream); a larger one is
# answered at once.
_DRAIN_FACTOR = 8
# Seconds a body may take to start flowing before body_min_rate applies.
_RATE_GRACE = 2.0


class SpineMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_json_depth: int,
        body_timeout: float,
        body_min_rate: int,
        trusted_proxies: TrustedProxies,
        hsts: str | None,
        access_log: bool = True,
        observers: Sequence[ResponseObserver] = (),
    ) -> None:
        self.app = app
        # Told of every answer (metrics, the monitor's HTTP signals); the
        # list is the app's, so services started in the lifespan can join it.
        self.observers = observers
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.body_timeout = body_timeout
        self.body_min_rate = body_min_rate
        self.proxies = trusted_proxies
        self.hsts = hsts.encode() if hsts else None
        self.access_log = access_log

    @classmethod
    def options(cls, settings: Settings) -> dict[str, object]:
        """Keyword arguments for ``app.add_middleware(SpineMiddleware, **...)``."""
        http = settings.http
        hsts = f"max-age={http.hsts_max_age}"
        if http.hsts_include_subdomains:
            hsts += "; includeSubDomains"
        return {
            "max_body_bytes": http.max_body_bytes,
            "max_json_depth": http.max_json_depth,
            "body_timeout": http.body_timeout,
            "body_min_rate": http.body_min_rate,
            "trusted_proxies": TrustedProxies(settings.server.trusted_proxies),
            "hsts": hsts,
            "access_log": settings.log.access,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        began = time.perf_counter()
        method = scope["method"]
        headers = _headers(scope["headers"])
        # Always our own id: a client-chosen one could collide with, or pose
        # as, another request's in the audit trail.
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        context = {"request_id": request_id}
        offered = headers.get("x-request-id")
        if offered and _REQUEST_ID.fullmatch(offered):
            context["client_request_id"] = offered
        structlog.contextvars.bind_contextvars(**context)
        self._attribute_client(scope, headers)

        extra = [*API_HEADERS, SERVER_HEADER, (b"x-request-id", request_id.encode())]
        if self.hsts and scope.get("scheme") == "https":
            extra.append((b"strict-transport-security", self.hsts))
        http1 = scope.get("http_version", "1.1").startswith("1")
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                form_action = scope["state"].get(FORM_ACTION_KEY, ())
                message["headers"] = _merge_headers(message.get("headers", []), extra, form_action)
            elif method == "HEAD" and message.get("body"):
                # RFC 9110 §9.3.2: the GET answer's headers, no content. HTTP/2
                # treats content after a HEAD answer as a protocol error.
                message = {**message, "body": b""}
            await send(message)

        try:
            self._check_host(scope, http1)
            if method == "HEAD":
                scope["method"] = "GET"
            if method in _BODY_METHODS:
                forms = scope["path"].startswith(_FORM_PATHS)
                receive = await self._checked_body(headers, receive, forms=forms)
            await self.app(scope, receive, send_with_headers)
        except Problem as problem:
            if http1 and isinstance(problem, RequestTimeout | PayloadTooLarge):
                # The rest of the body is still on the wire: end the connection
                # rather than read it, so its slot is free again.
                problem.headers["connection"] = "close"
            await _send_problem(send_with_headers, problem, request_id)
        except Exception:
            log.exception("unhandled error", path=scope.get("path"), method=method)
            if not status:
                await _send_problem(send_with_headers, InternalError(), request_id)
        finally:
            self._answered(scope, method, status, time.perf_counter() - began)
            structlog.contextvars.unbind_contextvars(*context)

    def _answered(self, scope: Scope, method: str, status: int, seconds: float) -> None:
        """The access-log line and the observers, once per answer."""
        if self.access_log:
            access_log.info(
                "request",
                method=method,
                # The path only: a query string may carry a token.
                path=scope.get("path"),
                status=status,
                duration_ms=round(seconds * 1000, 1),
                client=(scope.get("client") or ("", 0))[0],
            )
        for observe in self.observers:
            observe(scope, status, seconds)

    def _check_host(self, scope: Scope, http1: bool) -> None:
        """Refuse an HTTP/1.1 request whose Host header is missing or repeated (RFC 9112 §3.2: 400).

        Which names are answered is the network guard's (``http.allowed_hosts``).
        """
        if http1 and scope.get("http_version") != "1.0":
            hosts = sum(1 for name, _ in scope["headers"] if name == b"host")
            if hosts != 1:
                raise BadRequest("The request must carry exactly one Host header.")

    def _attribute_client(self, scope: Scope, headers: dict[str, str]) -> None:
        client = scope.get("client")
        if self.proxies and client:
            ip = self.proxies.client_ip(client[0], headers.get("x-forwarded-for"))
            scope["client"] = (ip, client[1] if ip == client[0] else 0)
            if ip != client[0] and headers.get("x-forwarded-proto") in ("http", "https"):
                scope["scheme"] = headers["x-forwarded-proto"]

    async def _checked_body(self, headers: dict[str, str], receive: Receive, *, forms: bool = False) -> Receive:
        """Read the whole body within the limits and check it is sane JSON (or, with ``forms``, a form).

        Raises a Problem before the application sees a byte of a bad body.
        """
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BadRequest("The Content-Length header is malformed.")
            if int(declared) > self.max_body_bytes * _DRAIN_FACTOR:
                raise PayloadTooLarge
        body = await self._read_body(receive)
        if body is None:
            return _replay(b"", disconnected=True)
        if body:
            if forms and _FORM_TYPE.fullmatch(headers.get("content-type", "").strip()):
                return _replay(body)  # parsed strictly by bastion.oauth.forms
            if not _JSON_TYPE.fullmatch(headers.get("content-type", "").strip()):
                raise UnsupportedMediaType
            self._check_json(body)
        return _replay(body)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The body, or None if the client left; RequestTimeout if it comes too slowly.

        A body is read whatever the headers say (an HTTP/2 body may declare no
        length), and must arrive whole within ``body_timeout`` and, after
        ``_RATE_GRACE`` seconds, at ``body_min_rate`` bytes per second on
        average: otherwise a client trickling a byte now and then would hold
        a connection slot (and this coroutine) for as long as it likes.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            allowed = self.body_timeout
            if self.body_min_rate:
                allowed = min(allowed, _RATE_GRACE + size / self.body_min_rate)
            try:
                async with asyncio.timeout_at(started + allowed):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout from None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes * _DRAIN_FACTOR:
                raise PayloadTooLarge
            if size <= self.max_body_bytes:
                chunks.append(chunk)
            more = message.get("more_body", False)
        if size > self.max_body_bytes:
            raise PayloadTooLarge
        return b"".join(chunks)

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


def allow_form_action(scope: Scope, origin: str) -> None:
    """Let this response's page post its form to ``origin`` too (``form-action``).

    Chromium applies ``form-action`` to every redirect that follows a form
    post, so the sign-in and consent pages, whose posts end in a redirect to
    the client, name the client's redirect origin. Set on the request's
    scope by Bastion's own code, never read from a response header, so no
    handler's headers can loosen the policy; ``origin`` must be a bare
    origin or scheme, or nothing is added.
    """
    if _FORM_ORIGIN.fullmatch(origin):
        scope.setdefault("state", {})[FORM_ACTION_KEY] = (*scope["state"].get(FORM_ACTION_KEY, ()), origin)


def _merge_headers(
    headers: Iterable[tuple[bytes, bytes]], extra: list[tuple[bytes, bytes]], form_action: Iterable[str] = ()
) -> list[tuple[bytes, bytes]]:
    # Our security and server headers win over anything a handler set; the
    # page policy for HTML, the API policy for everything else.
    names = {name for name, _ in extra} | {b"content-security-policy"}
    # A handler may declare a public, cacheable answer (discovery metadata, a
    # JWK Set); anything else is never stored by a cache.
    public = any(n.lower() == b"cache-control" and v.lower().startswith(b"public, max-age=") for n, v in headers)
    if public:
        names.discard(b"cache-control")
        extra = [(n, v) for n, v in extra if n != b"cache-control"]
    kept = [(n, v) for n, v in headers if n.lower() not in names]
    html = any(n.lower() == b"content-type" and v.lower().startswith(b"text/html") for n, v in kept)
    policy = PAGE_CSP if html else API_CSP
    allowed = [origin for origin in form_action if _FORM_ORIGIN.fullmatch(origin)]
    if html and allowed:
        policy = policy.replace(
            b"form-action 'self'", b" ".join([b"form-action 'self'", *(o.encode() for o in allowed)])
        )
    return [*kept, *extra, (b"content-security-policy", policy)]


async def _send_problem(send: Send, problem: Problem, request_id: str) -> None:
    body, headers = render(problem, request_id)
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": problem.status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
