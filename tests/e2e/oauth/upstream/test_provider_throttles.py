"""Start, callback and exchange are throttled per address before they do any work (V6.3.1 spirit)."""

from __future__ import annotations

from typing import Any

import pytest

from harness import Harness

pytestmark = pytest.mark.e2e


@pytest.fixture
def harness_settings(harness_settings: dict[str, Any]) -> dict[str, Any]:
    return {"oauth": {**harness_settings["oauth"], "provider_rate_per_ip": "3/minute"}}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/auth/providers/first/start"),
        ("GET", "/api/v1/auth/providers/first/callback?state=forged&code=forged"),
        ("POST", "/api/v1/auth/providers/exchange"),
    ],
)
async def test_provider_routes_are_throttled_per_address(harness: Harness, method: str, path: str) -> None:
    body = {"json": {"code": "forged"}} if method == "POST" else {}
    answers = [(await harness.client.request(method, path, **body)).status_code for _ in range(4)]
    assert answers[:3] == [answers[0]] * 3
    assert answers[0] in (302, 400)
    assert answers[3] == 429
