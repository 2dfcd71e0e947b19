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

    def line(self) -> str:
        return f"{self.setting}: {self.message}; {self.fix}"
