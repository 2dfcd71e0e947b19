"""Webhook signatures per the Standard Webhooks specification (symmetric scheme, ``v1``).

What the spec (standardwebhooks.com, ``spec/standard-webhooks.md``) fixes and
this module does:

- The secret is "Random. Between 24 bytes (192 bits) and 64 bytes (512
  bits)", serialised "base64 encoded, prefixed with ``whsec_``".
- The signed content is ``<webhook-id>.<webhook-timestamp>.<body>`` (the raw
  body bytes), signed with HMAC-SHA256 (RFC 2104) and sent as
  ``v1,<base64 signature>`` in ``webhook-signature``, beside ``webhook-id``
  (stable across retries: the receiver's idempotency key) and
  ``webhook-timestamp`` (integer Unix seconds).
- "The signature header is a space delimited list of signatures" so a
  secret can be rotated without downtime: a verifier tries each ``v1`` entry
  and ignores other versions (``v1a`` is the asymmetric scheme).
- A verifier compares in constant time ("Failing to do so can … turn them
  into signing oracles") and refuses a timestamp outside a tolerance ("to
  prevent replay attacks"); five minutes, the reference libraries' value.

:func:`verify` takes ``now`` from the caller (the injected clock) and raises
the one :class:`InvalidWebhook` for every failure. The secret never appears
in an error message. Checked against the spec's published vector and the
reference ``standardwebhooks`` package (tests/unit/security/test_security_webhooks.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence

from bastion.security.errors import SecurityError
from bastion.security.random import token_bytes

__all__ = [
    "DEFAULT_TOLERANCE",
    "InvalidWebhook",
    "new_webhook_secret",
    "parse_webhook_secret",
    "sign",
    "signature_headers",
    "verify",
]

SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's marker of a secret, not one
DEFAULT_TOLERANCE = 300
_MIN_SECRET_BYTES = 24
_MAX_SECRET_BYTES = 64
_NEW_SECRET_BYTES = 32
# Bounds on what a receiver parses: a signature list for a handful of
# rotating secrets, an id of a reasonable length, a timestamp of digits.
_MAX_SIGNATURES = 10
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
_ID_RE = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII, no space
_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class InvalidWebhook(SecurityError):
    """A webhook delivery does not verify: bad or missing headers, a stale or future timestamp, no valid signature."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def new_webhook_secret() -> str:
    """A fresh secret in the spec's form: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + _b64(token_bytes(_NEW_SECRET_BYTES))


def parse_webhook_secret(secret: str) -> bytes:
    """The key bytes of ``whsec_<base64>``; ValueError (naming no part of it) unless 24 to 64 bytes.

    Unpadded base64 is accepted, as the reference libraries accept it; the
    prefix is required, so a secret meant for another scheme is not taken
    for one of these.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret is 'whsec_' followed by base64")
    encoded = secret[len(SECRET_PREFIX) :]
    if not _B64_RE.fullmatch(encoded):
        raise ValueError("a webhook secret is 'whsec_' followed by base64")
    try:
        key = base64.b64decode(encoded.rstrip("=") + "=" * (-len(encoded.rstrip("=")) % 4), validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from None
    if not _MIN_SECRET_BYTES <= len(key) <= _MAX_SECRET_BYTES:
        raise ValueError("a webhook secret holds 24 to 64 bytes (base64 of 32 random bytes is usual)")
    return key


def _signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    content = b"%s.%d.%s" % (msg_id.encode("ascii"), timestamp, body)
    return hmac.new(key, content, hashlib.sha256).digest()


def _check_id(msg_id: str) -> None:
    if not _ID_RE.fullmatch(msg_id):
        raise ValueError("a webhook id is 1 to 256 printable ASCII characters without spaces")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256(secret, "<msg_id>.<timestamp>.<body>")>``, the ``webhook-signature`` value.

    ValueError for a malformed secret or id, or a negative timestamp (our
    own configuration and data: the caller validated them).
    """
    _check_id(msg_id)
    if timestamp < 0:
        raise ValueError("a webhook timestamp is Unix seconds")
    return "v1," + _b64(_signature(parse_webhook_secret(secret), msg_id, timestamp, body))


def signature_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of one delivery: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str | Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Check a delivery: its timestamp within ``tolerance`` seconds of ``now`` and one ``v1`` signature valid.

    ``secret`` may be several secrets (during a rotation); ``headers`` are
    matched case-insensitively. Raises :class:`InvalidWebhook` for any failure
    of the delivery (ValueError for a malformed ``secret``: ours, not theirs).
    A replay inside the tolerance verifies: the receiver dedupes on
    ``webhook-id``, as the spec says.
    """
    keys = [parse_webhook_secret(s) for s in ([secret] if isinstance(secret, str) else secret)]
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not _ID_RE.fullmatch(msg_id) or not _TIMESTAMP_RE.fullmatch(stamp) or not keys:
        raise InvalidWebhook
    timestamp = int(stamp)
    if abs(now - timestamp) > tolerance:
        raise InvalidWebhook
    offered = signatures.split(" ")
    if len(offered) > _MAX_SIGNATURES:
        raise InvalidWebhook
    expected = [_signature(key, msg_id, timestamp, body) for key in keys]
    valid = False
    for entry in offered:
        version, comma, encoded = entry.partition(",")
        if version != "v1" or not comma:
            continue  # other schemes (v1a) and noise are ignored, as the spec says
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        # Every candidate is compared against every key, whatever matched
        # before: the time taken does not depend on which one matched.
        for mac in expected:
            valid |= hmac.compare_digest(mac, candidate)
    if not valid:
        raise InvalidWebhook
