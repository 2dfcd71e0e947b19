"""Time-based one-time passwords (RFC 6238) and recovery codes (ASVS V6.5).

TOTP is HMAC-SHA-1, 6 digits, 30-second steps: the parameters every
authenticator app implements (RFC 6238 §5.2 and §4, RFC 4226 §5.3).
The caller supplies the time (our clock, never the client's: ASVS V6.5.8)
and stores the last accepted step so a code is usable once (ASVS V6.5.1).
"""

from __future__ import annotations

import base64
import hashlib
import secrets

import pyotp

from bastion.security.random import constant_time_equals

__all__ = [
    "RECOVERY_ALPHABET",
    "new_recovery_codes",
    "new_totp_secret",
    "normalize_recovery_code",
    "totp_at",
    "totp_uri",
    "verify_totp",
]

DIGITS = 6
PERIOD = 30
# RFC 6238 §5.2 allows a step of transmission delay or clock drift; each extra
# step accepted is one more code an attacker may guess per attempt.
WINDOW = 1
# 160 bits, the HMAC-SHA-1 output size: RFC 4226 §4 (R6) asks for at least 128
# and recommends 160, which is what authenticator apps expect.
SECRET_BYTES = 20

# Crockford's base32: no i, l, o or u, so a code read aloud or copied by hand
# has one spelling; normalize_recovery_code maps the look-alikes back.
RECOVERY_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
RECOVERY_GROUP = 5  # two groups of 5 symbols of 5 bits: 50 bits per code
_LOOKALIKES = str.maketrans({"o": "0", "i": "1", "l": "1", "-": None})


def new_totp_secret() -> str:
    """A fresh 160-bit TOTP seed from the CSPRNG (ASVS V6.5.3), as unpadded base32."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def totp_uri(secret: str, *, account: str, issuer: str) -> str:
    """The ``otpauth://totp/`` provisioning URI (Key Uri Format) for a QR code."""
    return _totp(secret).provisioning_uri(name=account, issuer_name=issuer)


def totp_at(secret: str, step: int) -> str:
    """The code for time step ``step`` (RFC 6238 §4.2: T = floor(unix time / 30))."""
    return _totp(secret).generate_otp(step)


def verify_totp(secret: str, code: str, *, now: int, after_step: int | None = None) -> int | None:
    """Return the time step ``code`` matches at ``now`` (± one step), else None.

    ``code`` must be exactly six ASCII digits once whitespace is removed;
    anything else is None, never an exception. Steps at or before
    ``after_step`` (the last step the caller accepted) are never accepted,
    which makes each code single-use (RFC 6238 §5.2, ASVS V6.5.1).
    """
    candidate = "".join(code.split())
    # str.isdigit alone accepts other scripts' digits ("١٢٣٤٥٦"), which no
    # authenticator produces.
    if len(candidate) != DIGITS or not (candidate.isascii() and candidate.isdigit()):
        return None
    totp = _totp(secret)
    current = now // PERIOD
    matched = None
    # Every step in the window is compared, so timing does not tell which one
    # matched; if two steps share a code, the later one is kept, which refuses
    # more replays.
    for step in range(current - WINDOW, current + WINDOW + 1):
        if step < 0 or (after_step is not None and step <= after_step):
            continue
        if constant_time_equals(totp.generate_otp(step), candidate):
            matched = step
    return matched


def new_recovery_codes(count: int = 10) -> list[str]:
    """``count`` distinct one-time recovery codes like ``7k2mq-x9d4f`` (50 bits each).

    ASVS V6.5.4 asks at least 20 bits of a lookup secret; these carry 50 from
    the CSPRNG (ASVS V6.5.3). Store only a keyed hash of
    :func:`normalize_recovery_code` of each.
    """
    codes: list[str] = []
    while len(codes) < count:
        symbols = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(2 * RECOVERY_GROUP))
        code = f"{symbols[:RECOVERY_GROUP]}-{symbols[RECOVERY_GROUP:]}"
        if code not in codes:
            codes.append(code)
    return codes


def normalize_recovery_code(code: str) -> str:
    """The canonical form of a typed recovery code, to hash and compare.

    Case, whitespace and dashes are ignored, and the letters Crockford's
    base32 leaves out are read as the digits they resemble (o as 0, i and l as 1).
    """
    return "".join(code.lower().split()).translate(_LOOKALIKES)


def _totp(secret: str) -> pyotp.TOTP:
    # HMAC-SHA-1 is what RFC 6238 authenticator apps compute; HMAC's security
    # does not rest on SHA-1's collision resistance (RFC 2104 §6, RFC 6194 §3.2).
    return pyotp.TOTP(secret, digits=DIGITS, digest=hashlib.sha1, interval=PERIOD)  # noqa: TID251
