"""The data tests' harness: the collections of tests/factories/data.py
declared, and two signed-in users, Alice and Bob (the ``data`` fixture)."""

from __future__ import annotations

from typing import Any

import pytest

from factories.data import COLLECTIONS, OWNER_ONLY
from harness import DataHarness, Harness

# The data tests import these from `conftest` too.
__all__ = ["ALICE", "BOB", "COLLECTIONS", "OWNER_ONLY", "DataHarness"]
ALICE, BOB = "alice@example.com", "bob@example.com"


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    return {"collections": COLLECTIONS}


@pytest.fixture
async def data(harness: Harness) -> DataHarness:
    return await DataHarness.of(harness, ALICE, BOB)
