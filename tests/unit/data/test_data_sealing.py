"""The associated data of a sealed record field."""

from __future__ import annotations

import uuid

from bastion.data.sealing import field_aad
from bastion.security import aad_for


def test_field_aad_is_the_length_prefixed_encoding_of_its_four_parts() -> None:
    """The per-field prefix is a shortcut only: the bytes are those rewrap and old values were bound to."""
    record_id = uuid.uuid4()
    expected = aad_for("bastion/record/v1", "notes", "secret", str(record_id))
    assert field_aad("notes", "secret", record_id) == expected
    assert field_aad("notes", "secret", str(record_id)) == expected
    assert field_aad("notes", "secretx", record_id) != expected
    assert field_aad("note", "ssecret", record_id) != expected
