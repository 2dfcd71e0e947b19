"""The backup tests' harness: the data collections declared and backups encrypted to the
identity of factories.backups."""

from __future__ import annotations

from typing import Any

import pytest

from factories.backups import RECIPIENT
from factories.data import COLLECTIONS


@pytest.fixture
def harness_settings() -> dict[str, Any]:
    return {"collections": COLLECTIONS, "backups": {"recipients": [RECIPIENT]}}
