"""Plain SHA-256 (FIPS 180-4) for integrity, where no key is involved.

For content that must be identified or committed to and can be public: the
audit log's salted hash of an event's personal fields, the SHA-256 manifest
of an incident bundle. A digest of something guessable (an address, a
password) proves nothing and hides nothing: salt it with
``token_bytes(32)`` first, as the audit log does, or use ``keyed_hash``.
"""

from __future__ import annotations

import hashlib

__all__ = ["DIGEST_SIZE", "StreamDigest", "digest"]

DIGEST_SIZE = 32


def digest(*parts: bytes) -> bytes:
    """SHA-256 of the concatenation of ``parts`` (32 bytes).

    Concatenation is ambiguous for variable-length parts ("ab" + "c" is
    "a" + "bc"): pass fixed-length prefixes (a 32-byte salt) or one
    canonical encoding.
    """
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()


class StreamDigest:
    """SHA-256 fed piece by piece: a file or stream too large to hold (a backup, a database)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        """Add ``data`` (counted in :attr:`size`)."""
        self._hash.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        """The SHA-256 of everything added so far, as 64 hex digits."""
        return self._hash.hexdigest()
