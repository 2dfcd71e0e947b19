"""TLS profiles, certificate expiry and the HTTP-to-HTTPS redirect listener.

Mozilla's server-side TLS guidelines (v5.7) define the profiles. Granian
terminates TLS with rustls, whose only suites are ECDHE with AES-GCM or
ChaCha20-Poly1305 (TLS 1.2) and the three TLS 1.3 AEAD suites, on X25519,
P-256 and P-384: exactly Mozilla's intermediate list minus the DHE suites.
So a profile comes down to the lowest protocol version; there is no cipher
string to get wrong.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from starlette.types import Receive, Scope, Send

from bastion.security.x509 import certificate_not_after
from bastion.settings import Settings, load_settings


@dataclass(frozen=True)
class TlsProfile:
    name: str
    min_version: str  # granian's ssl_protocol_min
    versions: tuple[str, ...]


PROFILES = {
    "intermediate": TlsProfile("intermediate", "tls1.2", ("TLSv1.2", "TLSv1.3")),
    "modern": TlsProfile("modern", "tls1.3", ("TLSv1.3",)),
}


def profile_of(settings: Settings) -> TlsProfile:
    return PROFILES[settings.tls.profile]


def days_until_expiry(cert_file: Path, *, now: dt.datetime) -> float:
    """Days left on the first certificate of ``cert_file`` (negative once expired)."""
    return (certificate_not_after(cert_file) - now).total_seconds() / 86400


def redirect_target(public_url: str, path: str, query: bytes) -> str:
    """The HTTPS URL for a plain-HTTP request.

    The origin comes from configuration (``auth.public_url``), never from the
    request's Host header, so the redirect cannot be pointed elsewhere.
    """
    origin = urlsplit(public_url)
    target = f"https://{origin.netloc}{path}"
    if query:
        target += "?" + query.decode("latin-1")
    return target


class RedirectApp:
    """Answers every plain-HTTP request with a redirect to HTTPS and nothing else."""

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if isinstance(raw, bytes) else scope["path"]
        if not path.startswith("/"):
            path = "/"
        # Control characters would let a path split the Location header.
        if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in path):
            path = "/"
        location = redirect_target(self.public_url, path, scope.get("query_string", b""))
        # 308 keeps the method; 301 would turn a POST into a GET silently.
        await send(
            {
                "type": "http.response.start",
                "status": 308,
                "headers": [
                    (b"location", location.encode("latin-1", "replace")),
                    (b"content-length", b"0"),
                    (b"cache-control", b"no-store"),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def redirect_app_factory() -> RedirectApp:
    """Entry point of the redirect listener's worker (settings from the environment)."""
    return RedirectApp(load_settings().auth.public_url)
