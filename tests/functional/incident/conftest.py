"""The incident tests' harness: the data tests' collections, so there are records to write."""

from __future__ import annotations

from typing import Any

import pytest

from factories.data import COLLECTIONS


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    return {"collections": COLLECTIONS}
