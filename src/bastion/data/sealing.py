"""Encrypted fields: AES-256-GCM through ``bastion.security``, bound to their place.

The associated data names the collection, the field and the record id, so a
ciphertext copied to another record or field fails authentication instead of
decrypting there (ASVS V11.3.3). A searchable field also stores an HMAC
blind index of its value, scoped to that collection and field, for equality
lookups that never decrypt; it reveals which records share a value, and
nothing else.

A record with an owner is sealed with the owner's data key (``user_keys``,
``bastion.data.userkeys``), so erasing the owner destroys every way to read
it (crypto-shredding); a record without one, under the keyring as before.
Both kinds of blob open side by side: each says which it is.
"""

from __future__ import annotations

import functools
import uuid

from bastion.data.userkeys import UserKeys
from bastion.security import BlindIndex, DataKey, Encryptor, InvalidCiphertext, aad_for, is_data_key_blob

_LABEL = "bastion/record/v1"


class FieldSealer:
    def __init__(self, encryptor: Encryptor, blind_index: BlindIndex) -> None:
        self._encryptor = encryptor
        self._index = blind_index
        # The users' data keys, one cache per sealer (per process): erasure destroys through it.
        self.user_keys = UserKeys(encryptor)

    def seal(self, collection: str, field: str, record_id: uuid.UUID, value: str, key: DataKey | None = None) -> bytes:
        """``value`` sealed with the owner's data key ``key``, or with the keyring for a record without owner."""
        aad = field_aad(collection, field, record_id)
        if key is not None:
            return key.seal(value.encode(), aad)
        return self._encryptor.encrypt(value.encode(), aad)

    def open(
        self, collection: str, field: str, record_id: uuid.UUID | str, blob: bytes, key: DataKey | None = None
    ) -> str:
        """The plaintext; raises InvalidCiphertext for a tampered, misplaced or unknown-key blob,
        and for a value sealed with a data key when ``key`` is None (destroyed, or not the owner's)."""
        aad = field_aad(collection, field, record_id)
        if is_data_key_blob(blob):
            if key is None:
                raise InvalidCiphertext
            return key.open(blob, aad).decode()
        return self._encryptor.decrypt(blob, aad).decode()

    def digest(self, collection: str, field: str, value: str) -> str:
        return self._index.digest(value, f"records:{collection}.{field}")


def field_aad(collection: str, field: str, record_id: uuid.UUID | str) -> bytes:
    """The associated data a record's sealed field is bound to (its collection, field and record).

    ``aad_for(_LABEL, collection, field, str(record_id))``, written as the
    field's prefix (computed once per field) followed by the record's part:
    the encoding is a concatenation of length-prefixed parts, so the bytes are
    the same, and a list decrypting many rows encodes only the ids.
    """
    return _field_prefix(collection, field) + aad_for(str(record_id))


@functools.lru_cache(maxsize=1024)
def _field_prefix(collection: str, field: str) -> bytes:
    return aad_for(_LABEL, collection, field)
