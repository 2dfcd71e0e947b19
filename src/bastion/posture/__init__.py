"""``bastion check``: configuration and transport posture, as findings.

``serve`` refuses to start in prod while any finding is an ``error``.
"""

from bastion.posture.checks import check_settings
from bastion.posture.finding import Finding, Severity

__all__ = ["Finding", "Severity", "check_settings"]
