"""The posture check refuses checkpoints kept beside the database they vouch for."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bastion.posture import check_settings
from bastion.posture.checks import _audit_findings
from bastion.settings import Settings


def test_a_checkpoint_dir_inside_the_data_dir_is_refused(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """V16.4.3: logs (here, their checkpoints) go to a separate system, not beside the database."""
    settings = make_settings(audit={"checkpoint_dir": str(tmp_path / "data" / "checkpoints")})
    found = [f for f in check_settings(settings) if f.setting == "audit.checkpoint_dir"]
    assert [f.severity for f in found] == ["warning"]  # dev: warned
    assert [f.severity for f in _audit_findings(settings, "error")] == ["error"]  # prod: refused at start
    outside = make_settings(audit={"checkpoint_dir": str(tmp_path / "elsewhere")})
    assert not [f for f in check_settings(outside) if f.setting == "audit.checkpoint_dir"]
