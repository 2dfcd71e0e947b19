"""schemathesis against /openapi.json: no generated request may cause a 5xx.

The operations are driven one by one with Hypothesis rather than through
``schemathesis.pytest.from_fixture``, which does not run under pytest 9.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from bastion.app import create_app
from bastion.audit import Origin
from bastion.clock import SystemClock
from bastion.instance import initialise
from bastion.runtime import build_services
from bastion.settings import Settings, load_settings
from bastion.uow import open_unit_of_work

PASSWORD = "tangerine-orbit-cascade-91"


def test_no_server_errors(tmp_path: Path) -> None:
    config = load_settings(tmp_path / "data", passwords={"memory_cost_kib": 7168, "time_cost": 1})
    initialise(config)
    app = create_app(config)
    headers = {"authorization": f"Bearer {_access_token(config)}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the OpenAPI document lists no operations"
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            # Signed in, so the authenticated routes are reached, not just refused.
            case.call_and_validate(checks=[not_a_server_error], headers=headers)

        fuzz()


def _access_token(config: Settings) -> str:
    async def sign_in() -> str:
        services = build_services(config, SystemClock())
        try:
            async with open_unit_of_work(services.db, Origin.cli(), services.postman.deliver) as uow:
                user = await services.identity.create_user(uow, "fuzz@example.com", PASSWORD, verified=True)
                tokens = await services.sessions.open(uow, user.id, mfa=True, user_agent="schemathesis")
            return tokens.access_token
        finally:
            await services.close()

    return asyncio.run(sign_in())
