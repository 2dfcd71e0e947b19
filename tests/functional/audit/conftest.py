"""The audit tests' harness: checkpoints shipped to a directory of the test's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def checkpoint_dir(tmp_path: Path) -> Path:
    return tmp_path / "checkpoints"


@pytest.fixture
def harness_settings(checkpoint_dir: Path) -> dict[str, Any]:
    return {"audit": {"checkpoint_dir": str(checkpoint_dir), "origin": "test.example/audit"}}
