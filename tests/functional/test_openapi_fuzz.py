"""schemathesis against /openapi.json: no generated request may cause a 5xx.

The operations are driven one by one with Hypothesis rather than through
``schemathesis.pytest.from_fixture``, which does not run under pytest 9.
"""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from bastion.app import create_app
from bastion.instance import initialise
from bastion.settings import load_settings


def test_no_server_errors(tmp_path: Path) -> None:
    config = load_settings(tmp_path / "data")
    initialise(config)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(config))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the OpenAPI document lists no operations"
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        fuzz()
