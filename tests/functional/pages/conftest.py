"""The pages touch no database: SQLite only."""

from __future__ import annotations

import pytest


@pytest.fixture
def database_url() -> None:
    return None
