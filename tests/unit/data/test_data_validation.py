"""Field validation edge cases that once reached the database as a 500."""

from __future__ import annotations

import re
import unicodedata

import pytest
from pydantic import TypeAdapter, ValidationError

from bastion.data import validation
from bastion.settings import CollectionSettings, FieldSettings

THINGS = CollectionSettings.model_validate(
    {"fields": {"due": {"type": "datetime", "filterable": True}}, "rules": {"create": "owner"}}
)


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:00-01:00"])
def test_a_time_without_a_utc_form_is_a_validation_error(value: str) -> None:
    """V2.2.1: input is checked against its expected range before it is stored."""
    body = validation.create_body_model("things", THINGS)
    with pytest.raises(ValidationError, match="out of range"):
        body.model_validate_json(f'{{"due": "{value}"}}')
    query = validation.query_model("things", THINGS)
    assert query.model_validate({"due.in": ["2026-01-01T00:00:00+01:00"]})
    with pytest.raises(ValidationError, match="out of range"):
        query.model_validate({"due.in": [value]})


def test_times_are_stored_in_utc() -> None:
    body = validation.create_body_model("things", THINGS)
    parsed = body.model_validate_json('{"due": "2026-05-01T12:00:00+02:00"}')
    assert parsed.due.isoformat() == "2026-05-01T10:00:00+00:00"


def test_v2_2_1_integers_are_json_schema_integers_and_the_document_names_the_control_characters() -> None:
    """V2.2.1 (schemathesis, positive_data_acceptance): the document says ``type: integer`` and
    JSON Schema counts 5.0 as one, so 5.0 is 5 (5.5, "5" and true stay refused); and the
    control characters a text field refuses are in its schema, as a pattern, exactly."""
    number = TypeAdapter(validation.body_type(FieldSettings(type="integer", min=1, max=5)))
    assert number.validate_python(5.0) == 5
    for refused in (5.5, "5", True, 6.0):
        with pytest.raises(ValidationError):
            number.validate_python(refused)
    for kind, allowed in (("string", ""), ("text", "\t\n\r"), ("richtext", "\t\n\r")):
        adapter = TypeAdapter(validation.body_type(FieldSettings(type=kind)))
        pattern = re.compile(adapter.json_schema()["allOf"][0]["pattern"])
        for code in range(0x200):
            char = chr(code)
            refused_by_code = unicodedata.category(char) == "Cc" and char not in allowed
            assert (pattern.fullmatch(f"a{char}b") is None) is refused_by_code, (kind, hex(code))
