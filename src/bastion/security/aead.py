"""Envelope encryption with AES-256-GCM (NIST SP 800-38D; ASVS V11.3.2, V11.3.3).

Blob format, version 1::

    version (1 byte, 0x01)
    kid length (1 byte)
    kid (ASCII, ``kid length`` bytes)
    nonce (12 random bytes)
    ciphertext || tag (16 bytes)

The header (everything before the ciphertext) is prepended to the caller's
associated data, so changing the version, kid or nonce fails authentication
like any change to the ciphertext. The header is self-delimiting, which keeps
``header || aad`` unambiguous.

The kid names the key in the "encryption" keyring, so blobs written before a
rotation still decrypt and can be moved to the new key with
:meth:`Encryptor.rewrap`.

Nonces are 96 random bits per message. NIST SP 800-38D §8.3 allows 2**32
random-nonce messages per key; rotate the keyring long before that.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.security.errors import InvalidCiphertext, KeyringError
from bastion.security.random import token_bytes

if TYPE_CHECKING:
    from bastion.security.keys import Keyring

__all__ = ["BlindIndex", "Encryptor", "aad_for"]

_VERSION = 0x01
_NONCE_BYTES = 12
_TAG_BYTES = 16


def aad_for(*parts: str) -> bytes:
    """Encode ``parts`` as associated data, each prefixed by its 4-byte length.

    The length prefix makes the encoding injective: ``("ab", "c")`` and
    ``("a", "bc")`` give different bytes, so a ciphertext bound to one context
    cannot be replayed in another that concatenates to the same text.
    """
    out = bytearray()
    for part in parts:
        data = part.encode()
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


def _seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-GCM encrypt; returns ciphertext || tag."""
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    """AES-GCM decrypt ``ciphertext || tag``; raises InvalidCiphertext."""
    try:
        return AESGCM(key).decrypt(nonce, sealed, aad)
    except InvalidTag:
        raise InvalidCiphertext from None


def _split(blob: bytes) -> tuple[str, bytes, bytes]:
    """Return (kid, header, ciphertext||tag) of a blob, or raise InvalidCiphertext."""
    if len(blob) < 2 or blob[0] != _VERSION:
        raise InvalidCiphertext
    header_len = 2 + blob[1] + _NONCE_BYTES
    if len(blob) < header_len + _TAG_BYTES:
        raise InvalidCiphertext
    try:
        kid = blob[2 : 2 + blob[1]].decode("ascii")
    except UnicodeDecodeError:
        raise InvalidCiphertext from None
    return kid, blob[:header_len], blob[header_len:]


class Encryptor:
    """Encrypt and decrypt values under the "encryption" keyring.

    ``aad`` binds a ciphertext to where it belongs (for example
    ``aad_for("users", user_id, "email")``); a blob copied to another row or
    column then fails to decrypt.
    """

    def __init__(self, keyring: Keyring) -> None:
        # One key, one use (ASVS V11.1.2): a signing seed must never become an AES key.
        if keyring.purpose != "encryption":
            raise ValueError("Encryptor needs the 'encryption' keyring")
        self._keyring = keyring

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt under the active key with a fresh random nonce."""
        kid = self._keyring.active_kid
        kid_bytes = kid.encode("ascii")
        header = bytes([_VERSION, len(kid_bytes)]) + kid_bytes + token_bytes(_NONCE_BYTES)
        nonce = header[-_NONCE_BYTES:]
        return header + _seal(self._keyring.secret(kid), nonce, plaintext, header + aad)

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt a blob written under any key of the keyring, active or retired."""
        kid, header, sealed = _split(blob)
        try:
            key = self._keyring.secret(kid)
        except KeyringError:
            raise InvalidCiphertext from None
        return _open(key, header[-_NONCE_BYTES:], sealed, header + aad)

    def key_id(self, blob: bytes) -> str:
        """Return the kid a blob was written under, without decrypting it."""
        return _split(blob)[0]

    def rewrap(self, blob: bytes, aad: bytes) -> bytes:
        """Re-encrypt ``blob`` under the active key, for use after a rotation.

        The blob is always authenticated first, so a rewrap pass over a table
        also detects corrupt rows; one already on the active key comes back
        unchanged.
        """
        plaintext = self.decrypt(blob, aad)
        if self.key_id(blob) == self._keyring.active_kid:
            return blob
        return self.encrypt(plaintext, aad)


class BlindIndex:
    """Keyed digest of a value for equality lookups on encrypted fields.

    HMAC-SHA256 (RFC 2104) under the active key of the "hmac" keyring, over
    ``aad_for(label, context, value)``: the fixed label keeps these digests apart
    from any other MAC made with that keyring, and ``context`` (for example
    ``"users.email"``) keeps equal values in different columns from matching.
    Rotating the "hmac" keyring changes every digest, so indexes must then be
    recomputed.
    """

    _LABEL = "bastion/blind-index/v1"

    def __init__(self, keyring: Keyring) -> None:
        if keyring.purpose != "hmac":
            raise ValueError("BlindIndex needs the 'hmac' keyring")
        self._keyring = keyring

    def digest(self, value: str, context: str) -> str:
        """Return the hex blind index of ``value`` in ``context``."""
        key = self._keyring.secret(self._keyring.active_kid)
        return hmac.new(key, aad_for(self._LABEL, context, value), hashlib.sha256).hexdigest()
