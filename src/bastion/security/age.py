"""age encryption (age-encryption.org/v1) to X25519 recipients, through pyrage.

Backups are encrypted to public keys only: the server that writes a backup
cannot read it back, and the identity (the private half) stays with the
operator. The output is a plain age file, which Debian's ``age -d -i FILE``
opens as well.
"""

from __future__ import annotations

from typing import BinaryIO

import pyrage
from pyrage import x25519

from bastion.security.errors import SecurityError

__all__ = ["AgeError", "decrypt_stream", "encrypt_stream", "new_identity", "parse_recipient", "recipient_of"]


class AgeError(SecurityError):
    """An age recipient, identity or file that cannot be used; the message says which, never the key."""


def new_identity() -> tuple[str, str]:
    """A new X25519 identity: (``AGE-SECRET-KEY-1…``, its recipient ``age1…``)."""
    identity = x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def parse_recipient(text: str) -> str:
    """``text`` as a canonical ``age1…`` recipient, or AgeError."""
    try:
        return str(x25519.Recipient.from_str(text.strip()))
    except pyrage.RecipientError:
        raise AgeError("not an age X25519 recipient (age1…)") from None


def recipient_of(identity_text: str) -> str:
    """The recipient of an identity file's text (its first ``AGE-SECRET-KEY-1`` line)."""
    return str(_identity(identity_text).to_public())


def encrypt_stream(source: BinaryIO, target: BinaryIO, recipients: list[str]) -> None:
    """Encrypt ``source`` into ``target`` to every recipient (any one of them can decrypt)."""
    if not recipients:
        raise AgeError("no recipients")
    keys = [x25519.Recipient.from_str(parse_recipient(text)) for text in recipients]
    try:
        pyrage.encrypt_io(source, target, keys)
    except pyrage.EncryptError:
        raise AgeError("the data could not be encrypted") from None


def decrypt_stream(source: BinaryIO, target: BinaryIO, identity_text: str) -> None:
    """Decrypt an age file; AgeError if it is corrupt or not encrypted to this identity."""
    try:
        pyrage.decrypt_io(source, target, [_identity(identity_text)])
    except pyrage.DecryptError:
        raise AgeError("the file cannot be decrypted with this identity, or it is corrupt") from None
    except OSError as exc:
        # A chunk that fails authentication past the header surfaces as a bare
        # OSError("decryption error") from pyrage's reader; a real I/O error has an errno.
        if exc.errno is not None:
            raise
        raise AgeError("the file is corrupt or truncated (a chunk fails authentication)") from None


def _identity(identity_text: str) -> x25519.Identity:
    lines = [line.strip() for line in identity_text.splitlines()]
    secret = next((line for line in lines if line.startswith("AGE-SECRET-KEY-1")), None)
    if secret is None:
        raise AgeError("no age identity (AGE-SECRET-KEY-1…) in the file")
    try:
        return x25519.Identity.from_str(secret)
    except pyrage.IdentityError:
        raise AgeError("the age identity is malformed") from None
