"""The privacy tests' harness: the data tests' collections, and Alice and Bob signed in."""

from __future__ import annotations

from typing import Any

import pytest

from factories.data import COLLECTIONS
from harness import DataHarness, Harness


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    return {"collections": COLLECTIONS}


@pytest.fixture
async def data(harness: Harness) -> DataHarness:
    return await DataHarness.of(harness, "alice@example.com", "bob@example.com")
