"""TLS profiles, certificate expiry and the HTTP-to-HTTPS redirect listener.

Mozilla's server-side TLS guidelines (v5.7) define the profiles. Granian
(public listener) terminates TLS with rustls, whose only suites are ECDHE with
AES-GCM or ChaCha20-Poly1305 (TLS 1.2) and the three TLS 1.3 AEAD suites, on
X25519, P-256 and P-384: exactly Mozilla's intermediate list minus the DHE
suites. So there a profile comes down to the lowest protocol version.

The admin listener terminates TLS with Python's ``ssl`` (OpenSSL), whose
defaults are wider, so ``server_context`` spells the same policy out.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from starlette.types import Receive, Scope, Send

from bastion.security.x509 import certificate_not_after
from bastion.settings import Settings


@dataclass(frozen=True)
class TlsProfile:
    name: str
    min_version: str  # granian's ssl_protocol_min
    versions: tuple[str, ...]
    openssl_min: ssl.TLSVersion


PROFILES = {
    "intermediate": TlsProfile("intermediate", "tls1.2", ("TLSv1.2", "TLSv1.3"), ssl.TLSVersion.TLSv1_2),
    "modern": TlsProfile("modern", "tls1.3", ("TLSv1.3",), ssl.TLSVersion.TLSv1_3),
}

# Mozilla intermediate's TLS 1.2 suites in OpenSSL's names, less the DHE ones
# (as rustls): ECDHE key exchange and AEAD only. TLS 1.3 needs no list:
# OpenSSL's default TLS 1.3 suites are Mozilla's three AEAD suites.
_TLS12_SUITES = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
# Python 3.11's ssl can name only one key-exchange group. P-256 is in
# Mozilla's list and every client offers it; OpenSSL's default list would
# also admit P-521, X448 and the finite-field groups.
_GROUP = "prime256v1"


def profile_of(settings: Settings) -> TlsProfile:
    return PROFILES[settings.tls.profile]


def server_context(
    profile: TlsProfile, cert: Path, key: Path, *, client_ca: Path | None = None, crl: Path | None = None
) -> ssl.SSLContext:
    """An OpenSSL server context for ``profile``, verifying client certificates against ``client_ca``.

    With ``client_ca`` a client certificate is required (ASVS V12.1.3,
    V12.3.5), must chain to that CA alone (not the system store), must allow
    ``clientAuth`` (OpenSSL's ``sslclient`` purpose) and, with ``crl``, must
    not be listed there: the leaf is checked, and a missing or expired CRL
    fails every handshake rather than none.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = profile.openssl_min
    context.set_ciphers(_TLS12_SUITES)
    context.set_ecdh_curve(_GROUP)
    # No session tickets or renegotiation: every connection is a full
    # handshake, so every connection has its certificate checked against the
    # CRL in force (a resumed session would skip that).
    context.options |= ssl.OP_NO_TICKET | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    context.num_tickets = 0
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca)
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        if crl is not None:
            context.load_verify_locations(cafile=crl)
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


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
