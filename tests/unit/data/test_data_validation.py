"""Field validation edge cases that once reached the database as a 500."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.data import validation
from bastion.settings import CollectionSettings

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
