"""Tests for bastion.security.datakeys: per-user data keys, wrapped by the keyring."""

from __future__ import annotations

import uuid

import pytest

from bastion.security import (
    DataKey,
    Encryptor,
    InvalidCiphertext,
    Keyring,
    aad_for,
    is_data_key_blob,
    new_wrapped_data_key,
)


def test_a_wrapped_key_unwraps_only_for_its_owner_and_survives_a_rotation(encryption_keyring: Keyring) -> None:
    """V11.3.2, V11.3.3: the data key is wrapped by the keyring and bound to its owner's id,
    so a wrapped key copied to another user's row does not unwrap there."""
    encryptor = Encryptor(encryption_keyring)
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    wrapped = new_wrapped_data_key(encryptor, alice)
    sealed = DataKey.unwrap(encryptor, wrapped, alice).seal(b"alice's secret", aad_for("x"))
    with pytest.raises(InvalidCiphertext):
        DataKey.unwrap(encryptor, wrapped, bob)
    encryption_keyring.rotate()
    rewrapped = encryptor.rewrap(wrapped, aad_for("bastion/user-data-key/v1", alice))
    assert encryptor.key_id(rewrapped) == encryption_keyring.active_kid != encryptor.key_id(wrapped)
    assert DataKey.unwrap(encryptor, rewrapped, alice).open(sealed, aad_for("x")) == b"alice's secret"


def test_values_open_only_with_their_key_place_and_bytes(encryption_keyring: Keyring) -> None:
    """V11.3.3: another user's key, another place, or any flipped bit is refused alike."""
    encryptor = Encryptor(encryption_keyring)
    mine = DataKey.unwrap(encryptor, new_wrapped_data_key(encryptor, "a"), "a")
    theirs = DataKey.unwrap(encryptor, new_wrapped_data_key(encryptor, "b"), "b")
    blob = mine.seal(b"value", aad_for("here"))
    assert is_data_key_blob(blob)
    assert mine.open(blob, aad_for("here")) == b"value"
    with pytest.raises(InvalidCiphertext):
        theirs.open(blob, aad_for("here"))
    with pytest.raises(InvalidCiphertext):
        mine.open(blob, aad_for("there"))
    for i in range(len(blob)):
        flipped = bytearray(blob)
        flipped[i] ^= 0x01
        with pytest.raises(InvalidCiphertext):
            mine.open(bytes(flipped), aad_for("here"))
    assert "value" not in repr(mine)
    assert mine.seal(b"value", aad_for("here")) != blob  # a fresh nonce each time
