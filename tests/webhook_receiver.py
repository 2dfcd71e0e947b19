"""A real HTTP server that receives webhooks, and a Standard Webhooks verifier
written from the spec, independently of ``bastion.security.webhooks``.

``WebhookReceiver`` runs ``http.server`` in a thread on 127.0.0.1 and keeps
every request (headers, body, arrival time); ``answers`` scripts the status
codes it gives (then ``default``). ``verify_standard_webhook`` checks a
request the way the spec's receivers do (https://www.standardwebhooks.com,
"Verifying webhooks"): the secret is base64 after ``whsec_``; the signed
content is ``{webhook-id}.{webhook-timestamp}.{body}``; ``webhook-signature``
holds space-separated ``v1,<base64 HMAC-SHA256>`` entries, one must match
(compared in constant time); the timestamp lies within the tolerance of now.
When the ``standardwebhooks`` package is installed it checks too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The Standard Webhooks spec's example secret (24 bytes of key).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()


@dataclass
class WebhookReceiver:
    answers: list[int] = field(default_factory=list)
    default: int = 204
    # Sent with 3xx answers.
    location: str = "http://127.0.0.1:9/elsewhere"
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hooks/alerts") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _answer(self) -> int:
        with self._lock:
            return self.answers.pop(0) if self.answers else self.default

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """At least ``count`` requests, or AssertionError after ``timeout`` (a generous bound, not a measure)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.requests) >= count:
                return list(self.requests)
            time.sleep(0.002)
        raise AssertionError(f"{len(self.requests)} webhook requests arrived, {count} expected")


@contextmanager
def webhook_receiver(answers: list[int] | None = None, default: int = 204) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(answers=list(answers or []), default=default)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            receiver.requests.append(
                Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
            )
            status = receiver._answer()
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("location", receiver.location)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # a burst of deliveries at once, not refused by the backlog
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


class SignatureRefused(Exception):
    pass


def verify_standard_webhook(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float, tolerance: float = 300
) -> bool:
    """Raise SignatureRefused unless the request is signed with ``secret`` (the spec's receiver side).

    True when the reference ``standardwebhooks`` package checked it too (it
    reads the wall clock, so only for a timestamp near the real time).
    """
    try:
        msg_id, stamp, signatures = headers["webhook-id"], headers["webhook-timestamp"], headers["webhook-signature"]
    except KeyError as exc:
        raise SignatureRefused(f"missing header {exc}") from None
    if abs(now - int(stamp)) > tolerance:
        raise SignatureRefused("timestamp outside the tolerance")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest())
    for entry in signatures.split(" "):
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            break
    else:
        raise SignatureRefused("no signature matches")
    try:
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError
    except ImportError:
        return False
    if abs(time.time() - int(stamp)) > tolerance:
        return False
    try:
        Webhook(secret).verify(body, dict(headers))
    except WebhookVerificationError as exc:
        raise SignatureRefused(str(exc)) from None
    return True
