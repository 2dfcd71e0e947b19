"""The associated data of a sealed record field."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bastion.data.sealing import FieldSealer, field_aad
from bastion.security import (
    BlindIndex,
    DataKey,
    Encryptor,
    InvalidCiphertext,
    Keyring,
    MasterKey,
    aad_for,
    is_data_key_blob,
    new_wrapped_data_key,
)


def test_field_aad_is_the_length_prefixed_encoding_of_its_four_parts() -> None:
    """The per-field prefix is a shortcut only: the bytes are those rewrap and old values were bound to."""
    record_id = uuid.uuid4()
    expected = aad_for("bastion/record/v1", "notes", "secret", str(record_id))
    assert field_aad("notes", "secret", record_id) == expected
    assert field_aad("notes", "secret", str(record_id)) == expected
    assert field_aad("notes", "secretx", record_id) != expected
    assert field_aad("note", "ssecret", record_id) != expected


def test_the_field_sealer_opens_old_keyring_blobs_and_refuses_data_key_blobs_without_the_key(
    tmp_path: Path,
) -> None:
    """Values sealed before per-user keys (under the keyring) still open; a value under a
    data key that is gone (erased) cannot be opened by any other path."""
    master = MasterKey.generate()
    encryptor = Encryptor(Keyring.load_or_create(tmp_path, "encryption", master))
    sealer = FieldSealer(encryptor, BlindIndex(Keyring.load_or_create(tmp_path, "hmac", master)))
    record_id = uuid.uuid4()
    old = sealer.seal("notes", "secret", record_id, "from before")
    assert not is_data_key_blob(old)
    assert sealer.open("notes", "secret", record_id, old) == "from before"
    key = DataKey.unwrap(encryptor, new_wrapped_data_key(encryptor, "owner"), "owner")
    new = sealer.seal("notes", "secret", record_id, "owned", key)
    assert sealer.open("notes", "secret", record_id, new, key) == "owned"
    with pytest.raises(InvalidCiphertext):
        sealer.open("notes", "secret", record_id, new)
    with pytest.raises(InvalidCiphertext):
        sealer.open("notes", "secret", uuid.uuid4(), new, key)
