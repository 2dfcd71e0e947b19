"""Random tokens and constant-time comparison (ASVS V11.5.1, V11.2.4).

Everything draws from :mod:`secrets`, i.e. the operating system CSPRNG.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["constant_time_equals", "hash_token", "public_id", "token_bytes", "token_urlsafe"]


def token_urlsafe(nbytes: int = 32) -> str:
    """Return ``nbytes`` random bytes as unpadded base64url text.

    Use at least 16 bytes (128 bits, ASVS V11.5.1) for anything an attacker must
    not guess; the default of 32 leaves a wide margin.
    """
    return secrets.token_urlsafe(nbytes)


def public_id(nbytes: int = 16) -> str:
    """A random identifier people type as a command argument (a key id, a client id).

    ``token_urlsafe`` text that never starts with ``-``: one in 64 would, and
    a command line reads ``bastion keys revoke signing -Xy…`` as an option.
    """
    while (candidate := secrets.token_urlsafe(nbytes)).startswith("-"):
        pass
    return candidate


def token_bytes(n: int = 32) -> bytes:
    """Return ``n`` random bytes from the CSPRNG."""
    return secrets.token_bytes(n)


def constant_time_equals(a: str | bytes, b: str | bytes) -> bool:
    """Compare two secrets in time independent of where they first differ.

    Text is encoded as UTF-8 first because :func:`hmac.compare_digest` only
    accepts ASCII ``str``.
    """
    a_bytes = a.encode() if isinstance(a, str) else a
    b_bytes = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(a_bytes, b_bytes)


def hash_token(token: str) -> str:
    """Return the hex SHA-256 of a high-entropy random token, for storage.

    Refresh, reset and verification tokens are stored hashed so a database leak
    does not hand out live credentials. A fast hash is enough for them: a
    256-bit random token cannot be found by guessing, however many guesses per
    second an attacker makes, and a deterministic digest lets the server find
    the row by an indexed lookup. Passwords are the opposite case: few bits of
    entropy, so they need a slow, salted hash (:class:`PasswordHasher`).
    """
    return hashlib.sha256(token.encode()).hexdigest()
