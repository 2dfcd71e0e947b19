"""Per-user data keys: crypto-shredding (GDPR art. 17; ASVS V11.1.3, V14.2.7).

Each user's encrypted record fields are sealed with a 256-bit data key of
their own, and that key is stored only wrapped by the "encryption" keyring
(:class:`~bastion.security.aead.Encryptor`, associated data naming the user,
so a wrapped key copied to another user's row fails to unwrap). Destroying
the wrapped key makes every field sealed with it unreadable, in the live
database and in every copy of it, without finding each copy.

A value sealed with a data key is a blob of its own version, so it cannot
be mistaken for a keyring blob (version 1, which names a keyring kid) and
both kinds open side by side::

    version (1 byte, 0x02: "sealed with the owner's data key")
    nonce (12 random bytes)
    ciphertext || tag (16 bytes)

As in version 1 the header is prepended to the caller's associated data.
The data key itself needs no rotation of its own: a rotation of the
"encryption" keyring rewraps the wrapped keys (``bastion keys rewrap``), and
the values under them stay as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.security.aead import aad_for
from bastion.security.errors import InvalidCiphertext
from bastion.security.random import token_bytes

if TYPE_CHECKING:
    from bastion.security.aead import Encryptor

__all__ = ["DATA_KEY_VERSION", "DataKey", "data_key_aad", "is_data_key_blob", "new_wrapped_data_key"]

DATA_KEY_VERSION = 0x02
_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_LABEL = "bastion/user-data-key/v1"


def data_key_aad(owner: str) -> bytes:
    """The associated data a wrapped data key is bound to: its owner's id."""
    return aad_for(_LABEL, owner)


def is_data_key_blob(blob: bytes) -> bool:
    """Whether ``blob`` was sealed with a data key (not with the keyring directly)."""
    return len(blob) > 0 and blob[0] == DATA_KEY_VERSION


def new_wrapped_data_key(encryptor: Encryptor, owner: str) -> bytes:
    """A fresh random data key for ``owner``, wrapped under the keyring's active key."""
    return encryptor.encrypt(token_bytes(_KEY_BYTES), data_key_aad(owner))


class DataKey:
    """One user's unwrapped data key: seals and opens that user's values.

    Holds the AES-GCM context, not only the bytes, so a list of a hundred
    records of one owner sets the key up once.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_BYTES:
            raise InvalidCiphertext
        self._aead = AESGCM(key)

    @classmethod
    def unwrap(cls, encryptor: Encryptor, wrapped: bytes, owner: str) -> DataKey:
        """The key ``wrapped`` holds; InvalidCiphertext if it is not ``owner``'s or was tampered with."""
        return cls(encryptor.decrypt(wrapped, data_key_aad(owner)))

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        header = bytes([DATA_KEY_VERSION]) + token_bytes(_NONCE_BYTES)
        return header + self._aead.encrypt(header[1:], plaintext, header + aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """The plaintext; InvalidCiphertext for any other key, place or change."""
        header_len = 1 + _NONCE_BYTES
        if not is_data_key_blob(blob) or len(blob) < header_len + _TAG_BYTES:
            raise InvalidCiphertext
        header = blob[:header_len]
        try:
            return self._aead.decrypt(header[1:], blob[header_len:], header + aad)
        except InvalidTag:
            raise InvalidCiphertext from None

    def __repr__(self) -> str:
        return "DataKey(**********)"
