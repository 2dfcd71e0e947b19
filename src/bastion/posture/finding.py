"""One finding of ``bastion check``: what is wrong, where, and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    setting: str
    message: str
    fix: str

    def as_json(self) -> dict[str, str]:
        """The finding as ``bastion check --format json`` prints it: the setting is its id."""
        return {"id": self.setting, "severity": self.severity, "title": self.message, "detail": self.fix}

    def line(self) -> str:
        return f"{self.setting}: {self.message}; {self.fix}"
